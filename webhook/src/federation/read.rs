//! Reading federated identity credentials and managed identities from files, directories
//! (walked, sorted) or `-` for stdin, in the formats platform teams already have:
//! `az identity federated-credential list|show -o json`, `az identity show|list -o json`
//! (ARM's `properties` form too) and `terraform show -json` of a plan or a state.

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use super::{Credential, Credentials, Identity, terraform};
use crate::inputs::{InputError, files_under};

/// Every credential and identity in `paths`.
pub fn read_paths(paths: &[PathBuf]) -> Result<Credentials, InputError> {
    let mut out = Credentials::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| InputError::Io {
                    path: "<stdin>".into(),
                    error,
                })?;
            out.extend(parse("<stdin>", &text)?);
        } else {
            for file in files_under(path)? {
                let name = file.display().to_string();
                let text = std::fs::read_to_string(&file).map_err(|error| InputError::Io {
                    path: name.clone(),
                    error,
                })?;
                out.extend(parse(&name, &text)?);
            }
        }
    }
    Ok(out)
}

/// The credentials and identities of one file's text (JSON, or YAML as `az -o yaml` prints).
pub fn parse(name: &str, text: &str) -> Result<Credentials, InputError> {
    let mut out = Credentials::default();
    for (i, value) in crate::inputs::documents(name, text)?
        .into_iter()
        .enumerate()
    {
        let source = format!("{name}#{}", i + 1);
        let read = from_value(&value, &source).map_err(|message| InputError::Shape {
            path: source.clone(),
            message,
        })?;
        out.extend(read);
    }
    Ok(out)
}

/// One document: a Terraform JSON, an az list (array) or a single az object.
pub fn from_value(value: &Value, source: &str) -> Result<Credentials, String> {
    let mut out = Credentials::default();
    match value {
        Value::Null => {}
        Value::Object(map) if map.contains_key("format_version") => {
            return terraform::read(value, source);
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                az_object(&mut out, item, &format!("{source}[{i}]"))?;
            }
        }
        Value::Object(_) => az_object(&mut out, value, source)?,
        _ => return Err(UNKNOWN.into()),
    }
    Ok(out)
}

const UNKNOWN: &str = "not a federated identity credential or managed identity: expected the JSON \
of `az identity federated-credential list`, `az identity show` or `terraform show -json`";

/// A field of an az object, or of its ARM `properties`.
fn field<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
        .or_else(|| item.get("properties").and_then(|p| p.get(key)))
}

fn text(item: &Value, key: &str) -> Option<String> {
    field(item, key).and_then(Value::as_str).map(str::to_string)
}

fn az_object(out: &mut Credentials, item: &Value, source: &str) -> Result<(), String> {
    if !item.is_object() {
        return Err(UNKNOWN.into());
    }
    let id = text(item, "id").unwrap_or_default();
    let name = text(item, "name").unwrap_or_default();
    if field(item, "subject").is_some() || field(item, "issuer").is_some() {
        let audiences = match field(item, "audiences") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("credential {name}: audiences must be strings"))?,
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        out.credentials.push(Credential {
            name,
            identity: parent_of(&id),
            issuer: text(item, "issuer").unwrap_or_default(),
            subject: text(item, "subject").unwrap_or_default(),
            audiences,
            source: source.to_string(),
        });
        return Ok(());
    }
    if field(item, "clientId").is_some() {
        out.identities.push(Identity {
            keys: vec![id],
            name,
            client_id: text(item, "clientId"),
            tenant_id: text(item, "tenantId"),
            source: source.to_string(),
        });
        return Ok(());
    }
    Err(UNKNOWN.into())
}

/// The identity's resource id in a credential's: everything before
/// `/federatedIdentityCredentials/<name>` (matched case-insensitively, as Azure does).
pub fn parent_of(credential_id: &str) -> String {
    const CHILD: &str = "/federatedidentitycredentials/";
    match credential_id.to_ascii_lowercase().rfind(CHILD) {
        Some(at) => credential_id[..at].to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourcegroups/rg-identity-linux/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-linux";

    #[test]
    fn az_list_and_show_are_linked_through_the_resource_id() {
        let list = serde_json::json!([{
            "audiences": ["api://AzureADTokenExchange"],
            "id": format!("{IDENTITY}/federatedIdentityCredentials/agents"),
            "issuer": "https://issuer.example/",
            "name": "agents",
            "resourceGroup": "rg-identity-linux",
            "subject": "system:serviceaccount:ado-agents-linux:ado-agent-linux",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
        }]);
        let show = serde_json::json!({
            "clientId": "AAAAAAAA-0000-0000-0000-000000000001",
            "id": IDENTITY.replace("resourcegroups", "resourceGroups"),
            "name": "mi-linux",
            "principalId": "bbbbbbbb-0000-0000-0000-000000000001",
            "tenantId": "cccccccc-0000-0000-0000-000000000001",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities"
        });
        let mut all = from_value(&list, "list.json#1").unwrap();
        all.extend(from_value(&show, "show.json#1").unwrap());
        let credential = &all.credentials[0];
        assert_eq!(credential.audiences, ["api://AzureADTokenExchange"]);
        assert_eq!(
            all.client_of(credential),
            Some("AAAAAAAA-0000-0000-0000-000000000001")
        );
        assert_eq!(
            all.of_client("aaaaaaaa-0000-0000-0000-000000000001")
                .count(),
            1
        );
    }

    #[test]
    fn arm_properties_are_read_too() {
        let arm = serde_json::json!({"name": "x", "properties": {
            "issuer": "https://i/", "subject": "system:serviceaccount:a:b",
            "audiences": ["api://AzureADTokenExchange"]}});
        let read = from_value(&arm, "arm#1").unwrap();
        assert_eq!(read.credentials[0].subject, "system:serviceaccount:a:b");
    }

    #[test]
    fn other_documents_are_refused_with_what_was_expected() {
        for bad in [
            serde_json::json!({"kind": "Pod"}),
            serde_json::json!([1, 2]),
            serde_json::json!("text"),
        ] {
            let err = from_value(&bad, "x#1").unwrap_err();
            assert!(
                err.contains("az identity federated-credential list"),
                "{err}"
            );
        }
        let err = parse("bad.json", "[{\"subject\": ")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.json:"), "{err}");
    }
}
