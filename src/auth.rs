//! Optional bearer-token authentication with three roles, as a tower layer keyed on the request
//! path: the token table (from `tokens_file` and `LNRS_TOKENS`), the one RPC → role table, and
//! the UNAUTHENTICATED / PERMISSION_DENIED answers with google.rpc.ErrorInfo.
//!
//! Roles are ordered: `reader` < `editor` < `admin`; a role may call everything a lower one may.
//! Health is always open; reflection is open unless `reflection_requires_auth`. A path this
//! table does not know needs `admin`, so a new RPC is closed until someone classifies it.
//!
//! Tokens are kept only as BLAKE3 digests and compared in constant time (`subtle`); no token,
//! presented or configured, is ever logged or echoed in an error.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::Status;

use crate::config::{Config, ConfigError, TokenEntry};
use crate::error::Error;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: Get/List/Watch, snapshot preview/verify/status/diff, delete impact, history.
    Reader,
    /// + create/update/delete/undelete of entities and links, CreateSnapshot, UpdateSnapshot.
    Editor,
    /// + RestoreSnapshot, RestoreToPoint, DeleteSnapshot, ApplyRetention, DrillReplica,
    ///   ApplyReplicaRetention.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

use Role::{Admin, Editor, Reader};

/// THE table: the role every `lnrs.v1` RPC needs (a unit test checks it covers the protos).
pub const RPC_ROLES: &[(&str, &[(&str, Role)])] = &[
    (
        "lnrs.v1.EntityService",
        &[
            ("GetMeasure", Reader),
            ("ListMeasures", Reader),
            ("CreateMeasure", Editor),
            ("UpdateMeasure", Editor),
            ("DeleteMeasure", Editor),
            ("GetArea", Reader),
            ("ListAreas", Reader),
            ("CreateArea", Editor),
            ("UpdateArea", Editor),
            ("DeleteArea", Editor),
            ("GetPriority", Reader),
            ("ListPriorities", Reader),
            ("CreatePriority", Editor),
            ("UpdatePriority", Editor),
            ("DeletePriority", Editor),
            ("GetSpecies", Reader),
            ("ListSpecies", Reader),
            ("CreateSpecies", Editor),
            ("UpdateSpecies", Editor),
            ("DeleteSpecies", Editor),
            ("GetHabitat", Reader),
            ("ListHabitats", Reader),
            ("CreateHabitat", Editor),
            ("UpdateHabitat", Editor),
            ("DeleteHabitat", Editor),
            ("GetGrant", Reader),
            ("ListGrants", Reader),
            ("CreateGrant", Editor),
            ("UpdateGrant", Editor),
            ("DeleteGrant", Editor),
            ("GetDeleteImpact", Reader),
            ("ListMeasureTypes", Reader),
            ("ListStakeholders", Reader),
            ("ListBenefits", Reader),
            ("ListFundingSchemes", Reader),
            ("CreateLink", Editor),
            ("DeleteLink", Editor),
            ("ListLinks", Reader),
            ("BatchCreateMeasureAreaPriorityLinks", Editor),
            ("Undelete", Editor),
        ],
    ),
    (
        "lnrs.v1.SnapshotService",
        &[
            ("CreateSnapshot", Editor),
            ("ListSnapshots", Reader),
            ("GetSnapshot", Reader),
            ("PreviewSnapshot", Reader),
            ("VerifySnapshot", Reader),
            ("RestoreSnapshot", Admin),
            ("RestoreToPoint", Admin),
            ("DeleteSnapshot", Admin),
            ("ApplyRetention", Admin),
            ("DrillReplica", Admin),
            ("ApplyReplicaRetention", Admin),
            ("GetStatus", Reader),
            ("DiffSnapshots", Reader),
            ("UpdateSnapshot", Editor),
            // A snapshot file holds every row: the same as reading them all.
            ("ExportSnapshot", Reader),
            ("ImportSnapshot", Admin),
        ],
    ),
    (
        "lnrs.v1.DataService",
        &[("ImportDatabase", Admin), ("ExportData", Reader)],
    ),
    (
        "lnrs.v1.EventService",
        &[
            ("WatchEvents", Reader),
            ("ListEvents", Reader),
            ("GetEntityHistory", Reader),
        ],
    ),
];

/// What a request path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Open,
    /// A token with at least this role.
    Needs(Role),
}

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
const REFLECTION_PREFIXES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Path → access, built once per server.
#[derive(Debug, Clone)]
pub struct AccessTable {
    rpcs: HashMap<String, Role>,
    reflection_requires_auth: bool,
}

impl AccessTable {
    pub fn new(reflection_requires_auth: bool) -> Self {
        let rpcs = RPC_ROLES
            .iter()
            .flat_map(|(service, methods)| {
                methods
                    .iter()
                    .map(move |(m, role)| (format!("/{service}/{m}"), *role))
            })
            .collect();
        Self {
            rpcs,
            reflection_requires_auth,
        }
    }

    /// What `path` ("/package.Service/Method") needs; unknown paths need admin.
    pub fn access(&self, path: &str) -> Access {
        if path.starts_with(HEALTH_PREFIX) {
            return Access::Open;
        }
        if REFLECTION_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return if self.reflection_requires_auth {
                Access::Needs(Reader)
            } else {
                Access::Open
            };
        }
        Access::Needs(self.rpcs.get(path).copied().unwrap_or(Admin))
    }
}

/// The configured tokens, as digests, each with its role and the principal it stands for.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role, String)>,
}

/// Who an accepted token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// Stable, non-secret identity of the token: its name, or for a token without one "token-"
    /// and 12 hex digits of a hash of its digest. Events record it; AIP-155 request ids are
    /// scoped to it.
    pub principal: String,
}

/// Longest token name.
pub const MAX_NAME_LEN: usize = 64;

/// The prefix of the principal of a token without a name (names may not start with it).
const UNNAMED_PREFIX: &str = "token-";

/// Whether a token may not be called `name`: the roles (an `LNRS_TOKENS` entry
/// `token:role:admin` would read as the role), and every principal that is not a token's name —
/// anonymous callers, the service's own work (`lnrs`, [`crate::app::RequestCtx::internal`]),
/// unnamed tokens and certificates without a subject (`cert-…`, [`crate::tls`]).
fn reserved(name: &str) -> bool {
    crate::config::ROLE_NAMES.contains(&name)
        || [crate::service::ctx::ANONYMOUS, "lnrs"].contains(&name)
        || [UNNAMED_PREFIX, "cert-"]
            .iter()
            .any(|p| name.starts_with(p))
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Why `name` cannot name a token, if it cannot. A bad name is not repeated: it may be a token
/// written in the wrong column.
fn bad_name(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Some(format!(
            "a token name must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ @ -"
        ));
    }
    if reserved(name) {
        return Some(format!(
            "the name is reserved (roles, `anonymous`, `lnrs`, `{UNNAMED_PREFIX}…` and `cert-…` \
             cannot name a token)"
        ));
    }
    None
}

/// Why `role` is not a role. A value long enough to be a token is not repeated: it may be one,
/// written in the wrong column (`name token role`).
fn unknown_role(role: &str) -> String {
    if role.len() >= MIN_TOKEN_LEN {
        return "the role is not reader, editor or admin (the columns are: token, role, name)"
            .into();
    }
    format!("unknown role `{role}` (reader, editor or admin)")
}

impl Tokens {
    /// Tokens from `tokens_file` and `LNRS_TOKENS` (already in `config.tokens`). Errors name
    /// the setting and the line, never the token.
    pub fn from_config(config: &Config) -> Result<Tokens, ConfigError> {
        let mut t = Tokens::default();
        if let Some(path) = &config.tokens_file {
            for (line, entry) in read_tokens_file(path)? {
                t.add("tokens_file", &format!("line {line}: "), &entry)?;
            }
        }
        for (i, entry) in config.tokens.iter().enumerate() {
            t.add("LNRS_TOKENS", &format!("entry {}: ", i + 1), entry)?;
        }
        Ok(t)
    }

    fn add(
        &mut self,
        setting: &'static str,
        at: &str,
        entry: &TokenEntry,
    ) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::Invalid {
            setting,
            why: format!("{at}{why}"),
        };
        let (token, role) = (&*entry.token, entry.role.as_str());
        let role = Role::parse(role).ok_or_else(|| bad(unknown_role(role)))?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "the token is shorter than {MIN_TOKEN_LEN} characters"
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "the token must be printable ASCII without spaces (it travels in a header)".into(),
            ));
        }
        let d = digest(token);
        if self.entries.iter().any(|(e, _, _)| *e == d) {
            return Err(bad("the same token is listed twice".into()));
        }
        let principal = match &entry.name {
            Some(name) => {
                if let Some(why) = bad_name(name) {
                    return Err(bad(why));
                }
                if self.entries.iter().any(|(_, _, p)| p == name) {
                    return Err(bad("the name is already used by another token".into()));
                }
                name.clone()
            }
            None => {
                let mut id = blake3::Hasher::new_derive_key("lnrs token principal");
                id.update(&d);
                format!("{UNNAMED_PREFIX}{}", &id.finalize().to_hex()[..12])
            }
        };
        self.entries.push((d, role, principal));
        Ok(())
    }

    /// Whether any token is configured (auth is on).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `presented`, comparing against every entry in constant time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.caller(presented).map(|c| c.role)
    }

    /// Who `presented` belongs to, comparing against every entry in constant time.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let d = digest(presented);
        let mut found = 0u32; // 1 + index of the match, 0 for none
        for (i, (entry, _, _)) in self.entries.iter().enumerate() {
            found.conditional_assign(&(i as u32 + 1), entry.ct_eq(&d));
        }
        let (_, role, principal) = self.entries.get((found as usize).checked_sub(1)?)?;
        Some(Caller {
            role: *role,
            principal: principal.clone(),
        })
    }
}

/// `token role [name]` per line; blank lines and `#` comments ignored. Returns (line, entry).
fn read_tokens_file(path: &Path) -> Result<Vec<(usize, TokenEntry)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        setting: "tokens_file",
        why: format!("cannot read {}: {e}", path.display()),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let entry = match parts[..] {
            [token, role] => TokenEntry::new(token, role),
            [token, role, name] => TokenEntry::new(token, role).named(name),
            _ => {
                return Err(ConfigError::Invalid {
                    setting: "tokens_file",
                    why: format!("line {}: expected `token role` or `token role name`", i + 1),
                })
            }
        };
        out.push((i + 1, entry));
    }
    Ok(out)
}

/// Warns when the tokens file can be read by anyone on the host.
pub fn warn_if_world_readable(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = &config.tokens_file else {
        return;
    };
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o004 != 0 {
            tracing::warn!(path = %path.display(), "tokens_file is world-readable; chmod 600 it");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The layer
// ---------------------------------------------------------------------------------------------

/// The decision for one request.
#[derive(Debug)]
pub enum Decision {
    /// Allowed; the caller when a token was checked.
    Allow(Option<Caller>),
    Deny(Status),
}

/// Everything the layer needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    tokens: Arc<Tokens>,
    table: Arc<AccessTable>,
}

impl Auth {
    pub fn new(tokens: Tokens, reflection_requires_auth: bool) -> Self {
        Self {
            tokens: Arc::new(tokens),
            table: Arc::new(AccessTable::new(reflection_requires_auth)),
        }
    }

    /// Auth is on when at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Decides for a request with `path` and these headers.
    pub fn decide(&self, path: &str, headers: &http::HeaderMap) -> Decision {
        if !self.enabled() {
            return Decision::Allow(None);
        }
        let needed = match self.table.access(path) {
            Access::Open => return Decision::Allow(None),
            Access::Needs(r) => r,
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Decision::Deny(unauthenticated(
                "MISSING_TOKEN",
                "this server needs a bearer token: send `authorization: Bearer <token>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Decision::Deny(unauthenticated(
                "INVALID_TOKEN",
                "the authorization header must be `Bearer <token>`",
            ));
        };
        match self.tokens.caller(token) {
            None => Decision::Deny(unauthenticated("INVALID_TOKEN", "unknown bearer token")),
            Some(c) if c.role < needed => Decision::Deny(role_too_low(path, needed, c.role)),
            Some(c) => Decision::Allow(Some(c)),
        }
    }
}

fn unauthenticated(reason: &'static str, message: &str) -> Status {
    Error::Unauthenticated {
        reason,
        message: message.to_string(),
    }
    .into()
}

fn role_too_low(path: &str, needed: Role, role: Role) -> Status {
    Error::PermissionDenied {
        rpc: path.to_string(),
        required: needed.as_str(),
        role: role.as_str(),
    }
    .into()
}

/// Tower layer applying [`Auth`] to every request.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Auth);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for AuthService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        match self.auth.decide(req.uri().path(), req.headers()) {
            Decision::Allow(caller) => {
                if let Some(c) = caller {
                    let span = tracing::Span::current();
                    span.record("role", c.role.as_str());
                    // The name, never the token: the same identity the events record.
                    span.record("principal", c.principal.as_str());
                    req.extensions_mut()
                        .insert(crate::service::ctx::Principal(c.principal));
                }
                // The clone is the one that was made ready; keep a fresh one for next time.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Decision::Deny(status) => Box::pin(std::future::ready(Ok(
                status.into_http::<tonic::body::Body>()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tonic::Code;

    fn proto_methods() -> Vec<(String, String)> {
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut out = Vec::new();
        for file in set.file {
            if file.package() != "lnrs.v1" {
                continue;
            }
            for s in &file.service {
                for m in &s.method {
                    out.push((format!("lnrs.v1.{}", s.name()), m.name().to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_rpc_in_the_protos_has_exactly_one_role() {
        let protos = proto_methods();
        let table: Vec<(String, String)> = RPC_ROLES
            .iter()
            .flat_map(|(s, ms)| ms.iter().map(move |(m, _)| (s.to_string(), m.to_string())))
            .collect();
        for p in &protos {
            assert!(table.contains(p), "{p:?} has no role in RPC_ROLES");
        }
        for t in &table {
            assert!(
                protos.contains(t),
                "{t:?} is in RPC_ROLES but not in the protos"
            );
        }
        assert_eq!(protos.len(), table.len(), "duplicate entries in RPC_ROLES");
    }

    #[test]
    fn roles_follow_the_documented_classes() {
        for (service, methods) in RPC_ROLES {
            for (m, role) in *methods {
                let expected = match *m {
                    "RestoreSnapshot"
                    | "RestoreToPoint"
                    | "DeleteSnapshot"
                    | "ApplyRetention"
                    | "DrillReplica"
                    | "ApplyReplicaRetention"
                    | "ImportSnapshot"
                    | "ImportDatabase" => Admin,
                    _ if [
                        "Get", "List", "Watch", "Preview", "Verify", "Diff", "Export",
                    ]
                    .iter()
                    .any(|p| m.starts_with(p)) =>
                    {
                        Reader
                    }
                    _ => Editor,
                };
                assert_eq!(*role, expected, "{service}/{m}");
            }
        }
    }

    #[test]
    fn health_is_open_reflection_configurable_unknown_needs_admin() {
        let t = AccessTable::new(false);
        assert_eq!(t.access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            t.access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(
            t.access("/lnrs.v1.EntityService/Nope"),
            Access::Needs(Admin)
        );
        let t = AccessTable::new(true);
        assert_eq!(
            t.access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Needs(Reader)
        );
        assert_eq!(t.access("/grpc.health.v1.Health/Watch"), Access::Open);
    }

    #[test]
    fn tokens_match_exactly_and_errors_never_show_the_token() {
        let mut cfg = Config::new("/tmp/x");
        cfg.tokens = vec![
            TokenEntry::new("reader-token-0123456789", "reader"),
            TokenEntry::new("admin-token-0123456789", "admin"),
        ];
        let t = Tokens::from_config(&cfg).unwrap();
        assert_eq!(t.role_of("reader-token-0123456789"), Some(Reader));
        assert_eq!(t.role_of("admin-token-0123456789"), Some(Admin));
        assert_eq!(t.role_of("admin-token-012345678"), None);
        assert_eq!(t.role_of(""), None);

        cfg.tokens = vec![TokenEntry::new("secret-but-short", "root")];
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("LNRS_TOKENS") && e.contains("root"), "{e}");
        assert!(!e.contains("secret-but-short"), "{e}");
        cfg.tokens = vec![TokenEntry::new("short", "admin")];
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(!e.contains("short`"), "{e}");
    }

    #[test]
    fn tokens_file_lines_are_parsed_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# comment\n\nreader-token-0123456789 reader\n  editor-token-0123456789   editor  \n",
        )
        .unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.tokens_file = Some(path.clone());
        let t = Tokens::from_config(&cfg).unwrap();
        assert_eq!(t.role_of("editor-token-0123456789"), Some(Editor));
        std::fs::write(
            &path,
            "reader-token-0123456789 reader\nonly-one-field-here\n",
        )
        .unwrap();
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("tokens_file") && e.contains("line 2"), "{e}");
        assert!(!e.contains("only-one-field-here"), "{e}");
    }

    #[test]
    fn the_config_knows_the_roles_by_their_names() {
        let names: Vec<&str> = [Reader, Editor, Admin].map(Role::as_str).to_vec();
        assert_eq!(names, crate::config::ROLE_NAMES);
        for name in crate::config::ROLE_NAMES {
            assert_eq!(Role::parse(name).map(Role::as_str), Some(name));
        }
    }

    #[test]
    fn named_tokens_are_known_by_their_names_and_bad_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "reader-token-0123456789 reader alice@example.org\neditor-token-0123456789 editor\n",
        )
        .unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.tokens_file = Some(path.clone());
        cfg.tokens = vec![TokenEntry::new("admin-token-0123456789", "admin").named("ci.bot_2")];
        let t = Tokens::from_config(&cfg).unwrap();
        let principal = |tok: &str| t.caller(tok).unwrap().principal;
        assert_eq!(principal("reader-token-0123456789"), "alice@example.org");
        assert_eq!(principal("admin-token-0123456789"), "ci.bot_2");
        let unnamed = principal("editor-token-0123456789");
        assert!(
            unnamed.starts_with("token-") && unnamed.len() == 18,
            "{unnamed}"
        );
        assert_eq!(t.role_of("reader-token-0123456789"), Some(Reader));

        // Bad names: the setting and the line are named; neither the token nor the name shown.
        let cases = [
            ("x y", "1-64 characters"),
            ("", "1-64 characters"),
            (&"n".repeat(65)[..], "1-64 characters"),
            ("admin", "reserved"),
            ("anonymous", "reserved"),
            ("lnrs", "reserved"),
            ("token-0123456789ab", "reserved"),
            ("cert-0123456789ab", "reserved"),
            ("ci.bot_2", "already used"),
        ];
        for (name, why) in cases {
            cfg.tokens_file = None;
            cfg.tokens = vec![
                TokenEntry::new("admin-token-0123456789", "admin").named("ci.bot_2"),
                TokenEntry::new("other-token-0123456789", "reader").named(name),
            ];
            let e = Tokens::from_config(&cfg).unwrap_err().to_string();
            assert!(
                e.contains("LNRS_TOKENS") && e.contains("entry 2") && e.contains(why),
                "{name:?}: {e}"
            );
            assert!(!e.contains("other-token"), "{e}");
        }
        cfg.tokens = vec![];
        cfg.tokens_file = Some(path.clone());
        std::fs::write(
            &path,
            "# ops\nreader-token-0123456789 reader alice\neditor-token-0123456789 editor bad/name\n",
        )
        .unwrap();
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("tokens_file") && e.contains("line 3"), "{e}");
        assert!(
            !e.contains("bad/name") && !e.contains("editor-token"),
            "{e}"
        );
        std::fs::write(&path, "reader-token-0123456789 reader alice extra\n").unwrap();
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("token role name"), "{e}");
        // The name first: the token sits where the role goes, and is not repeated.
        std::fs::write(&path, "alice reader-token-0123456789 reader\n").unwrap();
        let e = Tokens::from_config(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("token, role, name"),
            "{e}"
        );
        assert!(!e.contains("reader-token"), "{e}");
    }

    #[test]
    fn decisions_use_the_right_codes_and_reasons() {
        use tonic_types::StatusExt;
        let mut cfg = Config::new("/tmp/x");
        cfg.tokens = vec![TokenEntry::new("reader-token-0123456789", "reader")];
        let auth = Auth::new(Tokens::from_config(&cfg).unwrap(), false);
        let reason = |d: Decision| match d {
            Decision::Deny(s) => (
                s.code(),
                s.get_error_details().error_info().unwrap().reason.clone(),
            ),
            Decision::Allow(r) => panic!("allowed as {r:?}"),
        };
        let mut h = http::HeaderMap::new();
        let restore = "/lnrs.v1.SnapshotService/RestoreSnapshot";
        assert_eq!(
            reason(auth.decide(restore, &h)),
            (Code::Unauthenticated, "MISSING_TOKEN".into())
        );
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            reason(auth.decide(restore, &h)),
            (Code::Unauthenticated, "INVALID_TOKEN".into())
        );
        h.insert(
            "authorization",
            "Bearer nope-nope-nope-nope".parse().unwrap(),
        );
        assert_eq!(
            reason(auth.decide(restore, &h)),
            (Code::Unauthenticated, "INVALID_TOKEN".into())
        );
        h.insert(
            "authorization",
            "bearer reader-token-0123456789".parse().unwrap(),
        );
        assert_eq!(
            reason(auth.decide(restore, &h)),
            (Code::PermissionDenied, "ROLE_TOO_LOW".into())
        );
        assert!(matches!(
            auth.decide("/lnrs.v1.SnapshotService/GetStatus", &h),
            Decision::Allow(Some(Caller { role: Reader, .. }))
        ));
        assert!(matches!(
            auth.decide("/grpc.health.v1.Health/Check", &http::HeaderMap::new()),
            Decision::Allow(None)
        ));
    }
}
