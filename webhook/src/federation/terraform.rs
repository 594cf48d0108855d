//! `terraform show -json` of a plan or a state: `azurerm_user_assigned_identity` and
//! `azurerm_federated_identity_credential` resources, in the root module and every child
//! module. In a plan, ids and client ids of identities still to be created are unknown
//! ("known after apply"): a credential is then linked to its identity through the reference
//! in its `parent_id` expression (`azurerm_user_assigned_identity.x.id`).

use std::collections::HashMap;

use serde_json::Value;

use super::{Credential, Credentials, Identity};

const IDENTITY: &str = "azurerm_user_assigned_identity";
const CREDENTIAL: &str = "azurerm_federated_identity_credential";
/// What an unknown planned value reads as in messages.
pub const UNKNOWN: &str = "(known after apply)";

/// The identities and credentials of one `terraform show -json` document.
pub fn read(value: &Value, source: &str) -> Result<Credentials, String> {
    let version = value["format_version"].as_str().unwrap_or_default();
    if !matches!(version.split('.').next(), Some("0" | "1")) {
        return Err(format!(
            "terraform JSON format_version {version:?} is not supported (1.x expected)"
        ));
    }
    // address -> (values, unknown fields)
    let mut resources: Vec<(String, Value, Value)> = Vec::new();
    if let Some(root) = value.pointer("/values/root_module") {
        walk_module(root, &mut resources);
    }
    if let Some(root) = value.pointer("/planned_values/root_module") {
        walk_module(root, &mut resources);
    }
    // Changes planned_values leaves out, and what each planned resource does not know yet.
    for change in value["resource_changes"].as_array().into_iter().flatten() {
        let address = change["address"].as_str().unwrap_or_default().to_string();
        let unknown = change.pointer("/change/after_unknown").cloned();
        let deleted = change.pointer("/change/actions") == Some(&serde_json::json!(["delete"]));
        match resources.iter_mut().find(|(a, _, _)| *a == address) {
            Some(known) => known.2 = unknown.unwrap_or(Value::Null),
            None if !deleted => {
                if let Some(after) = change.pointer("/change/after").filter(|a| a.is_object()) {
                    resources.push((address, after.clone(), unknown.unwrap_or(Value::Null)));
                }
            }
            None => {}
        }
    }
    let references = config_references(value);

    let mut out = Credentials::default();
    for (address, values, unknown) in &resources {
        let source = format!("{source} {address}");
        let text = |key: &str| values[key].as_str().map(str::to_string);
        let is_unknown = |key: &str| unknown[key] == Value::Bool(true);
        match resource_type(address).as_str() {
            IDENTITY => {
                let mut keys = vec![address.clone(), strip_last_index(address)];
                keys.extend(text("id"));
                out.identities.push(Identity {
                    keys,
                    name: text("name").unwrap_or_else(|| address.clone()),
                    client_id: text("client_id").filter(|c| !c.is_empty()),
                    tenant_id: text("tenant_id"),
                    source,
                });
            }
            CREDENTIAL => {
                let identity = text("parent_id")
                    .or_else(|| referenced_identity(address, &references))
                    .unwrap_or_default();
                let field = |key: &str| {
                    text(key)
                        .unwrap_or_else(|| if is_unknown(key) { UNKNOWN } else { "" }.to_string())
                };
                let audiences = match &values["audience"] {
                    Value::Array(list) => list
                        .iter()
                        .map(|a| a.as_str().unwrap_or(UNKNOWN).to_string())
                        .collect(),
                    _ if is_unknown("audience") => vec![UNKNOWN.to_string()],
                    _ => Vec::new(),
                };
                out.credentials.push(Credential {
                    name: text("name").unwrap_or_else(|| address.clone()),
                    identity,
                    issuer: field("issuer"),
                    subject: field("subject"),
                    audiences,
                    source,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Resources of a state or planned-values module and its child modules: (address, values).
fn walk_module(module: &Value, out: &mut Vec<(String, Value, Value)>) {
    for r in module["resources"].as_array().into_iter().flatten() {
        if r["mode"].as_str().unwrap_or("managed") != "managed" {
            continue;
        }
        if let Some(address) = r["address"].as_str()
            && !out.iter().any(|(a, _, _)| a == address)
        {
            out.push((address.to_string(), r["values"].clone(), Value::Null));
        }
    }
    for child in module["child_modules"].as_array().into_iter().flatten() {
        walk_module(child, out);
    }
}

/// `azurerm_x` of `module.a["k"].azurerm_x.name[0]`.
fn resource_type(address: &str) -> String {
    let plain = strip_indexes(address);
    let mut parts = plain.rsplit('.');
    parts.next();
    parts.next().unwrap_or_default().to_string()
}

/// The address without any `[index]` (configuration addresses have none).
fn strip_indexes(address: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    let mut quoted = false;
    for c in address.chars() {
        match c {
            '"' if depth > 0 => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The address without the resource's own index (`x.y[0]` -> `x.y`).
fn strip_last_index(address: &str) -> String {
    match address.strip_suffix(']').and_then(|a| a.rfind('[')) {
        Some(at) => address[..at].to_string(),
        None => address.to_string(),
    }
}

/// Configuration resource address (module path without indexes) -> the references of its
/// `parent_id` expression.
fn config_references(value: &Value) -> HashMap<String, Vec<String>> {
    fn walk(module: &Value, prefix: &str, out: &mut HashMap<String, Vec<String>>) {
        for r in module["resources"].as_array().into_iter().flatten() {
            let address = format!("{prefix}{}", r["address"].as_str().unwrap_or_default());
            let refs = r
                .pointer("/expressions/parent_id/references")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            out.insert(address, refs);
        }
        if let Some(calls) = module["module_calls"].as_object() {
            for (name, call) in calls {
                walk(&call["module"], &format!("{prefix}module.{name}."), out);
            }
        }
    }
    let mut out = HashMap::new();
    if let Some(root) = value.pointer("/configuration/root_module") {
        walk(root, "", &mut out);
    }
    out
}

/// The identity address a credential's `parent_id` refers to, in the credential's module
/// instance: `module.m["k"].azurerm_user_assigned_identity.x`.
fn referenced_identity(address: &str, references: &HashMap<String, Vec<String>>) -> Option<String> {
    let refs = references.get(&strip_indexes(address))?;
    let target = refs.iter().find_map(|r| {
        let rest = r.strip_prefix(&format!("{IDENTITY}."))?;
        let name = rest.split('.').next()?;
        Some(format!("{IDENTITY}.{name}"))
    })?;
    let module = match address.rfind(&format!("{CREDENTIAL}.")) {
        Some(at) => &address[..at],
        None => "",
    };
    Some(format!("{module}{target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A plan of a module instantiated per pool: ids unknown, the credential linked to the
    /// identity of its own module instance through the configuration's reference.
    #[test]
    fn unknown_parent_ids_are_linked_through_the_reference_in_the_same_module_instance() {
        let module = |key: &str| {
            json!({"address": format!("module.pool[\"{key}\"]"), "resources": [
                {"address": format!("module.pool[\"{key}\"].{IDENTITY}.this"), "mode": "managed",
                 "type": IDENTITY, "name": "this", "values": {"name": format!("mi-{key}")}},
                {"address": format!("module.pool[\"{key}\"].{CREDENTIAL}.this[0]"), "mode": "managed",
                 "type": CREDENTIAL, "name": "this", "index": 0,
                 "values": {"name": key, "issuer": "https://i/", "audience": ["api://AzureADTokenExchange"],
                            "subject": format!("system:serviceaccount:{key}:agent")}},
            ]})
        };
        let plan = json!({
            "format_version": "1.2",
            "planned_values": {"root_module": {"child_modules": [module("a"), module("b")]}},
            "resource_changes": [{"address": format!("module.pool[\"b\"].{CREDENTIAL}.this[0]"),
                "change": {"actions": ["create"], "after_unknown": {"id": true, "parent_id": true}}}],
            "configuration": {"root_module": {"module_calls": {"pool": {"module": {"resources": [
                {"address": format!("{CREDENTIAL}.this"), "expressions": {"parent_id": {"references":
                    [format!("{IDENTITY}.this.id"), format!("{IDENTITY}.this")]}}}]}}}}}
        });
        let read = read(&plan, "plan.json#1").unwrap();
        assert_eq!(read.identities.len(), 2);
        for c in &read.credentials {
            let identity = read.identity_of(c).unwrap();
            assert_eq!(identity.name, format!("mi-{}", c.name), "{c:?}");
            assert_eq!(identity.client_id, None);
        }
    }

    #[test]
    fn an_unsupported_format_version_is_refused() {
        let err = read(&json!({"format_version": "2.0"}), "x").unwrap_err();
        assert!(err.contains("2.0"), "{err}");
    }
}
