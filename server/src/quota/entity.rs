//! Quota entities (KIP-546): `user` and `client-id`, each named or the default (a null name
//! on the wire, `<default>` in kafka-configs.sh), alone or combined; the quota values set on
//! each ([`QuotaMap`]); which entity's value applies to a request (Kafka's precedence); and
//! DescribeClientQuotas filters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// One side of an entity: a name, or the default for every name without its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Name {
    Default,
    Named(String),
}

impl Name {
    pub fn from_wire(name: Option<&str>) -> Name {
        match name {
            None => Name::Default,
            Some(n) => Name::Named(n.to_string()),
        }
    }

    /// The wire form (None: default).
    pub fn wire(&self) -> Option<&str> {
        match self {
            Name::Default => None,
            Name::Named(n) => Some(n),
        }
    }
}

/// A quota entity: user, client-id, or both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Name>,
}

impl Entity {
    /// The (type, name) parts in Kafka's order: user first.
    pub fn parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut v = Vec::with_capacity(2);
        if let Some(u) = &self.user {
            v.push((USER, u.wire()));
        }
        if let Some(c) = &self.client_id {
            v.push((CLIENT_ID, c.wire()));
        }
        v
    }

    /// From the wire's (entity_type, entity_name) pairs, validated as Kafka's
    /// ClientQuotaControlManager does; the error is an INVALID_REQUEST message.
    pub fn from_wire<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Entity, String> {
        let mut e = Entity {
            user: None,
            client_id: None,
        };
        let mut any = false;
        for (ty, name) in parts {
            any = true;
            let slot =
                match ty {
                    USER => &mut e.user,
                    CLIENT_ID => &mut e.client_id,
                    IP => return Err(
                        "ip quota entities (connection_creation_rate) are not supported by sluice"
                            .into(),
                    ),
                    other => return Err(format!("Unhandled client quota entity type: {other}")),
                };
            if slot.is_some() {
                return Err(format!("Duplicate entity type {ty} in the quota entity"));
            }
            if name == Some("") {
                return Err(format!("Empty {ty} not supported"));
            }
            *slot = Some(Name::from_wire(name));
        }
        if !any {
            return Err("Invalid empty client quota entity".into());
        }
        Ok(e)
    }

    /// kafka-configs.sh's name of it: `user-principal 'alice', client-id 'x'`.
    pub fn describe(&self) -> String {
        let side = |what: &str, n: &Name| match n {
            Name::Default => format!("the default {what}"),
            Name::Named(s) => format!("{what} '{s}'"),
        };
        let mut v = Vec::new();
        if let Some(u) = &self.user {
            v.push(side("user-principal", u));
        }
        if let Some(c) = &self.client_id {
            v.push(side("client-id", c));
        }
        v.join(", ")
    }
}

/// The quota types sluice enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
}

impl QuotaType {
    pub const ALL: [QuotaType; 3] = [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request];

    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => "producer_byte_rate",
            QuotaType::Fetch => "consumer_byte_rate",
            QuotaType::Request => "request_percentage",
        }
    }

    pub fn of_key(key: &str) -> Option<QuotaType> {
        QuotaType::ALL.into_iter().find(|t| t.key() == key)
    }

    /// The bit of this type in [`QuotaMap::kinds`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Checks one quota key and value as Kafka's ClientQuotaControlManager does (the error is an
/// INVALID_REQUEST message).
pub fn validate_value(key: &str, value: f64) -> Result<QuotaType, String> {
    let Some(t) = QuotaType::of_key(key) else {
        if key == "controller_mutation_rate" {
            return Err(
                "controller_mutation_rate is not enforced by sluice (producer_byte_rate, \
                 consumer_byte_rate and request_percentage are)"
                    .into(),
            );
        }
        return Err(format!("Invalid configuration key {key}"));
    };
    if !value.is_finite() {
        return Err(format!("Quota {key} must be a finite number"));
    }
    if value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    if t != QuotaType::Request {
        // LONG keys
        if value > i64::MAX as f64 {
            return Err(format!("Proposed value for {key} is too large for a LONG."));
        }
        if value.fract() != 0.0 {
            return Err(format!("{key} cannot be a fractional value."));
        }
    }
    Ok(t)
}

/// One quota value (a double on the wire). Compared bit for bit so the metadata image stays
/// `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for QuotaValue {}

/// The values set on one entity, by key.
pub type Quotas = BTreeMap<String, QuotaValue>;

#[derive(Serialize, Deserialize)]
struct Row {
    entity: Entity,
    quotas: Quotas,
}

/// Every entity's quotas (stored as a list: JSON maps need string keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Row>", into = "Vec<Row>")]
pub struct QuotaMap(pub BTreeMap<Entity, Quotas>, Index);

/// What [`QuotaMap::resolve`] checks before it builds a key: the (user, client) shapes that
/// exist and the names they use, so a client no quota names costs no allocation. Derived from
/// the map (built on first use, dropped by [`QuotaMap::apply`]).
#[derive(Debug, Clone, Default)]
struct Index(std::sync::OnceLock<Box<Names>>);

/// Derived from the map: two maps are equal when their entries are.
impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Index {}

#[derive(Debug, Clone, Default)]
struct Names {
    /// Bit `3 * user side + client side` (0 absent, 1 default, 2 named).
    shapes: u16,
    users: std::collections::HashSet<String>,
    clients: std::collections::HashSet<String>,
}

fn side(n: &Option<Name>) -> u16 {
    match n {
        None => 0,
        Some(Name::Default) => 1,
        Some(Name::Named(_)) => 2,
    }
}

impl From<Vec<Row>> for QuotaMap {
    fn from(rows: Vec<Row>) -> Self {
        QuotaMap::new(
            rows.into_iter()
                .filter(|r| !r.quotas.is_empty())
                .map(|r| (r.entity, r.quotas))
                .collect(),
        )
    }
}

impl From<QuotaMap> for Vec<Row> {
    fn from(m: QuotaMap) -> Self {
        m.0.into_iter()
            .map(|(entity, quotas)| Row { entity, quotas })
            .collect()
    }
}

/// A change to one entity: keys to set (Some) or remove (None).
pub type Ops = Vec<(String, Option<QuotaValue>)>;

impl QuotaMap {
    pub fn new(map: BTreeMap<Entity, Quotas>) -> QuotaMap {
        QuotaMap(map, Index::default())
    }

    fn names(&self) -> &Names {
        self.1 .0.get_or_init(|| {
            let mut n = Names::default();
            for e in self.0.keys() {
                n.shapes |= 1 << (3 * side(&e.user) + side(&e.client_id));
                if let Some(Name::Named(u)) = &e.user {
                    n.users.insert(u.clone());
                }
                if let Some(Name::Named(c)) = &e.client_id {
                    n.clients.insert(c.clone());
                }
            }
            Box::new(n)
        })
    }

    /// Applies `ops` to `entity` (an entity left without values is removed).
    pub fn apply(&mut self, entity: &Entity, ops: &Ops) {
        self.1 = Index::default();
        let q = self.0.entry(entity.clone()).or_default();
        for (k, v) in ops {
            match v {
                Some(v) => {
                    q.insert(k.clone(), *v);
                }
                None => {
                    q.remove(k);
                }
            }
        }
        if q.is_empty() {
            self.0.remove(entity);
        }
    }

    /// Bits of the quota types set anywhere ([`QuotaType::bit`]).
    pub fn kinds(&self) -> u8 {
        let mut k = 0;
        for q in self.0.values() {
            for key in q.keys() {
                if let Some(t) = QuotaType::of_key(key) {
                    k |= t.bit();
                }
            }
        }
        k
    }

    /// The quota of type `t` for a request of `user` with `client_id`, with the metric tags it
    /// is accounted under: the first entity in Kafka's precedence order that sets `t`
    /// (users/<user>/clients/<client-id>, users/<user>/clients/<default>, users/<user>,
    /// users/<default>/clients/<client-id>, users/<default>/clients/<default>,
    /// users/<default>, clients/<client-id>, clients/<default>). The tags are the request's
    /// own names for the sides that entity has, "" for the others (so a default quota is
    /// enforced per user / client, and a user's quota over all of its clients together).
    pub fn resolve(&self, t: QuotaType, user: &str, client_id: &str) -> Option<(Tags, f64)> {
        let named = |s: &str| Some(Name::Named(s.to_string()));
        let def = || Some(Name::Default);
        let order = |level: usize| match level {
            0 => (named(user), named(client_id)),
            1 => (named(user), def()),
            2 => (named(user), None),
            3 => (def(), named(client_id)),
            4 => (def(), def()),
            5 => (def(), None),
            6 => (None, named(client_id)),
            _ => (None, def()),
        };
        let idx = self.names();
        // (user side, client side) of each level, as in `side`
        const SHAPES: [(u16, u16); 8] = [
            (2, 2),
            (2, 1),
            (2, 0),
            (1, 2),
            (1, 1),
            (1, 0),
            (0, 2),
            (0, 1),
        ];
        for (level, (us, cs)) in SHAPES.into_iter().enumerate() {
            if idx.shapes & (1 << (3 * us + cs)) == 0
                || (us == 2 && !idx.users.contains(user))
                || (cs == 2 && !idx.clients.contains(client_id))
            {
                continue;
            }
            let (u, c) = order(level);
            let (has_user, has_client) = (u.is_some(), c.is_some());
            let e = Entity {
                user: u,
                client_id: c,
            };
            if let Some(v) = self.0.get(&e).and_then(|q| q.get(t.key())) {
                let tags = Tags {
                    user: if has_user { user.into() } else { String::new() },
                    client_id: if has_client {
                        client_id.into()
                    } else {
                        String::new()
                    },
                };
                return Some((tags, v.0));
            }
        }
        None
    }
}

/// Whom a rate is kept for (Kafka's quota metric tags).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tags {
    pub user: String,
    pub client_id: String,
}

/// One DescribeClientQuotas filter component.
#[derive(Debug, Clone, Copy)]
pub enum Match<'a> {
    /// match_type 0: this name (None is an error on the wire, checked in [`Filter::new`]).
    Exact(&'a str),
    /// match_type 1: the default entity of the type.
    Default,
    /// match_type 2: any name of the type, the default included.
    Any,
}

/// A DescribeClientQuotas filter: components by entity type, and `strict`.
pub struct Filter<'a> {
    parts: Vec<(&'a str, Match<'a>)>,
    strict: bool,
}

impl<'a> Filter<'a> {
    /// From the wire's (entity_type, match_type, match) components, validated as Kafka's
    /// ClientQuotasImage.describe does (the error is an INVALID_REQUEST message).
    pub fn new(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<Filter<'a>, String> {
        let mut parts: Vec<(&'a str, Match<'a>)> = Vec::new();
        for (ty, match_type, m) in components {
            if ty != USER && ty != CLIENT_ID && ty != IP {
                return Err(format!("Invalid entity type {ty}"));
            }
            if parts.iter().any(|(t, _)| *t == ty) {
                return Err(format!(
                    "Entity type {ty} cannot appear more than once in the filter."
                ));
            }
            let mm = match match_type {
                0 => Match::Exact(m.ok_or_else(|| {
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".to_string()
                })?),
                1 if m.is_some() => {
                    return Err(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    )
                }
                1 => Match::Default,
                2 if m.is_some() => {
                    return Err(
                        "Request specified MATCH_TYPE_SPECIFIED, but also specified a match \
                         string."
                            .into(),
                    )
                }
                2 => Match::Any,
                other => return Err(format!("Unknown match type {other}")),
            };
            parts.push((ty, mm));
        }
        let has = |t: &str| parts.iter().any(|(p, _)| *p == t);
        if has(IP) && (has(USER) || has(CLIENT_ID)) {
            return Err(
                "Attempted to combine IP entity types with user or client ID entity types.".into(),
            );
        }
        Ok(Filter { parts, strict })
    }

    /// Whether `e` passes: every component matches one of its sides, and with `strict` it has
    /// no other sides.
    pub fn matches(&self, e: &Entity) -> bool {
        let sides = e.parts();
        if self.strict && sides.len() != self.parts.len() {
            return false;
        }
        self.parts.iter().all(|(ty, m)| {
            let Some((_, name)) = sides.iter().find(|(t, _)| t == ty) else {
                return false;
            };
            match m {
                Match::Exact(want) => *name == Some(*want),
                Match::Default => name.is_none(),
                Match::Any => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(user: Option<Option<&str>>, client: Option<Option<&str>>) -> Entity {
        Entity {
            user: user.map(Name::from_wire),
            client_id: client.map(Name::from_wire),
        }
    }

    fn set(m: &mut QuotaMap, e: Entity, key: &str, v: f64) {
        m.apply(&e, &vec![(key.to_string(), Some(QuotaValue(v)))]);
    }

    #[test]
    fn precedence_is_kafkas() {
        let p = "producer_byte_rate";
        let mut m = QuotaMap::default();
        let levels = [
            ent(None, Some(None)),
            ent(None, Some(Some("c"))),
            ent(Some(None), None),
            ent(Some(None), Some(None)),
            ent(Some(None), Some(Some("c"))),
            ent(Some(Some("u")), None),
            ent(Some(Some("u")), Some(None)),
            ent(Some(Some("u")), Some(Some("c"))),
        ];
        // adding each more specific level in turn takes over
        for (i, e) in levels.iter().enumerate() {
            set(&mut m, e.clone(), p, (i + 1) as f64);
            let (_, v) = m.resolve(QuotaType::Produce, "u", "c").expect("resolved");
            assert_eq!(v, (i + 1) as f64, "level {i}: {e:?}");
        }
        // another user and client only see the defaults
        let (tags, v) = m.resolve(QuotaType::Produce, "x", "y").expect("resolved");
        assert_eq!(v, 4.0, "users/<default>/clients/<default>");
        assert_eq!((tags.user.as_str(), tags.client_id.as_str()), ("x", "y"));
        // per type: consumer_byte_rate unset anywhere
        assert!(m.resolve(QuotaType::Fetch, "u", "c").is_none());
        // a user quota is shared by all its clients
        let mut m = QuotaMap::default();
        set(&mut m, ent(Some(Some("u")), None), p, 10.0);
        let (tags, _) = m.resolve(QuotaType::Produce, "u", "c").expect("resolved");
        assert_eq!((tags.user.as_str(), tags.client_id.as_str()), ("u", ""));
    }

    #[test]
    fn removing_the_last_value_removes_the_entity() {
        let mut m = QuotaMap::default();
        let e = ent(None, Some(Some("c")));
        set(&mut m, e.clone(), "producer_byte_rate", 5.0);
        assert_eq!(m.kinds(), QuotaType::Produce.bit());
        m.apply(&e, &vec![("producer_byte_rate".into(), None)]);
        assert!(m.0.is_empty());
        assert_eq!(m.kinds(), 0);
        // and it round-trips through JSON
        set(
            &mut m,
            ent(Some(None), Some(Some("c"))),
            "request_percentage",
            2.5,
        );
        let j = serde_json::to_string(&m).expect("json");
        let back: QuotaMap = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn entities_and_values_are_validated() {
        assert!(Entity::from_wire([]).is_err());
        assert!(Entity::from_wire([("user", Some(""))]).is_err());
        assert!(Entity::from_wire([("user", None), ("user", Some("a"))]).is_err());
        assert!(Entity::from_wire([("group", Some("a"))]).is_err());
        assert!(Entity::from_wire([("ip", Some("1.2.3.4"))]).is_err());
        let e = Entity::from_wire([("client-id", Some("c")), ("user", None)]).expect("ok");
        assert_eq!(e.parts(), vec![("user", None), ("client-id", Some("c"))]);
        assert!(validate_value("producer_byte_rate", 1024.0).is_ok());
        assert!(validate_value("producer_byte_rate", 10.5).is_err());
        assert!(validate_value("consumer_byte_rate", 0.0).is_err());
        assert!(validate_value("request_percentage", 12.5).is_ok());
        assert!(validate_value("request_percentage", f64::NAN).is_err());
        assert!(validate_value("bogus", 1.0).is_err());
    }

    #[test]
    fn filters_match_as_kafka() {
        let a = ent(Some(Some("u")), None);
        let b = ent(Some(Some("u")), Some(Some("c")));
        let c = ent(Some(None), Some(None));
        let d = ent(None, Some(Some("c")));
        let all = [&a, &b, &c, &d];
        let run = |comps: Vec<(&str, i8, Option<&str>)>, strict: bool| -> Vec<usize> {
            let f = Filter::new(comps, strict).expect("filter");
            (0..all.len()).filter(|i| f.matches(all[*i])).collect()
        };
        assert_eq!(run(vec![("user", 0, Some("u"))], false), vec![0, 1]);
        assert_eq!(run(vec![("user", 0, Some("u"))], true), vec![0]);
        assert_eq!(run(vec![("user", 1, None)], false), vec![2]);
        assert_eq!(run(vec![("user", 2, None)], false), vec![0, 1, 2]);
        assert_eq!(run(vec![("client-id", 2, None)], true), vec![3]);
        assert_eq!(run(vec![], false), vec![0, 1, 2, 3]);
        assert_eq!(run(vec![], true), Vec::<usize>::new());
        assert!(Filter::new(vec![("user", 0, None)], false).is_err());
        assert!(Filter::new(vec![("user", 1, Some("x"))], false).is_err());
        assert!(Filter::new(vec![("user", 2, None), ("user", 1, None)], false).is_err());
        assert!(Filter::new(vec![("user", 7, None)], false).is_err());
        assert!(Filter::new(vec![("nope", 2, None)], false).is_err());
        assert!(Filter::new(vec![("ip", 2, None), ("user", 2, None)], false).is_err());
    }
}
