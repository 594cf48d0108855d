//! The claims of a service-account token, read from its payload. The signature is not
//! checked: the token was just minted by the API server over an authenticated connection,
//! and only what it says is shown, never trusted for a decision.

use base64::Engine;
use serde_json::Value;

/// The claims Entra ID matches against a federated credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// `aud` is a string or a list in JWTs: always a list here.
    pub aud: Vec<String>,
    /// Seconds since the epoch.
    pub exp: Option<i64>,
}

/// The claims of a compact JWT (`header.payload.signature`).
pub fn decode(jwt: &str) -> Result<Claims, String> {
    let mut parts = jwt.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts expected)".into());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("JWT payload is not base64url: {e}"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))?;
    let text = |k: &str| value[k].as_str().unwrap_or_default().to_string();
    let aud = match &value["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        iss: text("iss"),
        sub: text("sub"),
        aud,
        exp: value["exp"].as_i64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let claims = decode(&jwt(
            r#"{"iss":"https://issuer/","sub":"system:serviceaccount:a:b","aud":["api://AzureADTokenExchange"],"exp":1700000000}"#,
        ))
        .unwrap();
        assert_eq!(claims.iss, "https://issuer/");
        assert_eq!(claims.sub, "system:serviceaccount:a:b");
        assert_eq!(claims.aud, ["api://AzureADTokenExchange"]);
        assert_eq!(claims.exp, Some(1_700_000_000));
        let one = decode(&jwt(r#"{"aud":"x"}"#)).unwrap();
        assert_eq!(one.aud, ["x"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", &jwt("not json")] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
