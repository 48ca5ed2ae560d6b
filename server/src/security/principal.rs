//! Principals from client certificates: the subject's distinguished name in RFC 2253 form (as
//! Java's `X500Principal.getName()` prints it, so Kafka's ACLs and mapping rules carry over),
//! then `ssl.principal.mapping.rules` (`RULE:pattern/replacement/[LU]` and `DEFAULT`, first full
//! match wins, as Kafka's `SslPrincipalMapper`).

use regex::Regex;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The subject DN of a DER certificate, RFC 2253: the last RDN first, `+` inside an RDN,
/// special characters escaped; `None` if the certificate does not parse.
pub fn subject_dn(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type().to_id_string();
                let value = match atv.as_str() {
                    Ok(v) => escape(v),
                    // not a string: Java prints the DER of the value in hex
                    Err(_) => format!("#{}", hex(atv.attr_value().as_bytes())),
                };
                format!("{}={value}", short_name(&oid).unwrap_or(&oid))
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// Parsed `ssl.principal.mapping.rules`.
#[derive(Debug)]
pub struct MappingRules(Vec<Rule>);

impl MappingRules {
    pub fn parse(text: &str) -> Result<MappingRules, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: expected RULE:pattern/replacement/"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: expected RULE:pattern/replacement/"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern {pattern:?}: {e}"))?;
                rules.push(Rule::Replace {
                    pattern,
                    replacement: java_to_rust_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "{rest:?}: rules are RULE:pattern/replacement/[LU] or DEFAULT"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("{rest:?}: expected a comma between rules")),
            }
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(MappingRules(rules))
    }

    /// The short name for `dn`: the first rule that matches all of it; the DN itself when none
    /// does (Kafka refuses such a client; sluice keeps the DN so that ACLs on it still apply).
    pub fn apply(&self, dn: &str) -> String {
        for rule in &self.0 {
            match rule {
                Rule::Default => return dn.to_string(),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(dn) {
                        let out = pattern.replace(dn, replacement.as_str()).into_owned();
                        return match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        };
                    }
                }
            }
        }
        dn.to_string()
    }
}

/// Text up to the next unescaped `/` (with `\/` unescaped) and what follows it.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references, as `${1}` so that a following letter is not read as part of
/// the group name.
fn java_to_rust_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            out.push_str(&format!("${{{n}}}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_mapping_rules() {
        let r = MappingRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, DEFAULT",
        )
        .expect("parses");
        assert_eq!(r.apply("CN=kafka-svc,OU=ServiceUsers,O=Acme"), "kafka-svc");
        assert_eq!(r.apply("CN=Alice,OU=Eng,O=Acme"), "alice@eng");
        assert_eq!(r.apply("CN=bob"), "CN=bob");
        let cn = MappingRules::parse("RULE:^.*CN=([^,]*).*$/$1/U").expect("parses");
        assert_eq!(cn.apply("CN=usercc,O=lab"), "USERCC");
        assert_eq!(
            MappingRules::parse("").expect("empty").apply("CN=x"),
            "CN=x"
        );
        assert!(MappingRules::parse("RULE:(/x").is_err());
        assert!(MappingRules::parse("SOMETHING").is_err());
        assert!(MappingRules::parse("RULE:([/x/").is_err(), "bad regex");
    }

    #[test]
    fn subject_in_rfc2253_order() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Lab, Inc");
        dn.push(rcgen::DnType::OrganizationalUnitName, "eng");
        dn.push(rcgen::DnType::CommonName, "usercc");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            subject_dn(cert.der()).expect("parses"),
            "CN=usercc,OU=eng,O=Lab\\, Inc,C=US"
        );
        assert_eq!(subject_dn(b"not a certificate"), None);
    }

    #[test]
    fn rfc2253_escapes() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("#x"), "\\#x");
        assert_eq!(escape("plain"), "plain");
    }
}
