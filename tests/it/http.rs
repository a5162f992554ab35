//! The HTTP/JSON mapping of the contract (`google.api.http` on every RPC, AIP-127), checked over
//! the descriptor set the server embeds and `lnrs descriptor-set` writes for Envoy's
//! `grpc_json_transcoder`. No Envoy binary ships through the registries this project reaches,
//! so this check stands in for running the transcoder: every rule must be one the transcoder
//! accepts and that binds to real fields of the request, with no two routes colliding.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use lnrs::pb;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

/// The HTTP verbs of `HttpRule.pattern` (`custom` is not used by this contract).
const VERBS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// One HTTP binding of a method: its main rule or one of its `additional_bindings`.
#[derive(Clone, Debug)]
struct Binding {
    method: MethodDescriptor,
    verb: String,
    path: String,
    body: String,
}

impl Binding {
    fn name(&self) -> String {
        format!(
            "{} ({} {})",
            self.method.full_name(),
            self.verb.to_uppercase(),
            self.path
        )
    }
}

/// Every lnrs.v1 method of the pool, in declaration order.
fn lnrs_methods(pool: &DescriptorPool) -> Vec<MethodDescriptor> {
    pool.services()
        .filter(|s| s.package_name() == "lnrs.v1")
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect()
}

/// The bindings of every lnrs.v1 method, and the problems found reading them (a method without
/// the annotation, a rule with no or several patterns, nested additional bindings).
fn read_bindings(pool: &DescriptorPool) -> (Vec<Binding>, Vec<String>) {
    let ext = pool
        .get_extension_by_name("google.api.http")
        .expect("google/api/annotations.proto is in the descriptor set");
    let mut bindings = Vec::new();
    let mut problems = Vec::new();
    for method in lnrs_methods(pool) {
        let options = method.options();
        if !options.has_extension(&ext) {
            problems.push(format!("{}: no google.api.http rule", method.full_name()));
            continue;
        }
        let rule = options.get_extension(&ext);
        let rule = rule.as_message().expect("HttpRule is a message");
        let mut rules = vec![(rule.clone(), true)];
        if let Some(extra) = rule.get_field_by_name("additional_bindings") {
            for r in extra.as_list().unwrap_or_default() {
                rules.push((r.as_message().expect("HttpRule").clone(), false));
            }
        }
        for (rule, top) in rules {
            match binding(&method, &rule) {
                Ok(b) => bindings.push(b),
                Err(e) => problems.push(format!("{}: {e}", method.full_name())),
            }
            let nested = rule
                .get_field_by_name("additional_bindings")
                .is_some_and(|v| !v.as_list().unwrap_or_default().is_empty());
            if !top && nested {
                problems.push(format!(
                    "{}: an additional binding has its own additional_bindings",
                    method.full_name()
                ));
            }
        }
    }
    (bindings, problems)
}

/// The one verb + path of an `HttpRule`, and its body.
fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, String> {
    let set: Vec<(&str, String)> = VERBS
        .iter()
        .filter(|v| rule.has_field_by_name(v))
        .map(|v| (*v, text(rule, v)))
        .collect();
    if rule.has_field_by_name("custom") {
        return Err("custom verbs are not used by this contract".into());
    }
    match set.as_slice() {
        [(verb, path)] => Ok(Binding {
            method: method.clone(),
            verb: verb.to_string(),
            path: path.clone(),
            body: text(rule, "body"),
        }),
        other => Err(format!(
            "exactly one HTTP pattern expected, found {other:?}"
        )),
    }
}

fn text(msg: &DynamicMessage, field: &str) -> String {
    msg.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Splits a path template into its variables' field paths and its route (variables replaced by their
/// patterns), checking its syntax: the `/v1/` prefix, lowerCamelCase literal segments,
/// `{field.path}` or `{field.path=pattern}` variables, `**` only last, an optional `:verb`.
fn parse_template(path: &str) -> Result<(Vec<String>, String), String> {
    let rest = path
        .strip_prefix("/v1/")
        .ok_or("the path does not start with /v1/")?;
    // The custom verb: a ':' after the last segment boundary or variable.
    let tail = rest.rfind(['/', '}']).map_or(0, |i| i + 1);
    let (segments_text, verb) = match rest[tail..].find(':') {
        Some(i) => (&rest[..tail + i], Some(&rest[tail + i + 1..])),
        None => (rest, None),
    };
    let segments = split_outside_braces(segments_text);
    let mut vars = Vec::new();
    let mut route = String::from("/v1");
    for (i, segment) in segments.iter().enumerate() {
        route.push('/');
        let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            check_camel(segment)?;
            route.push_str(segment);
            continue;
        };
        let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
        let parts: Vec<&str> = pattern.split('/').collect();
        for (j, part) in parts.iter().enumerate() {
            let last = i + 1 == segments.len() && j + 1 == parts.len();
            match *part {
                "*" => {}
                "**" if last => {}
                "**" => return Err(format!("{{{inner}}}: ** must be the last segment")),
                literal => check_camel(literal)?,
            }
        }
        if field.is_empty() {
            return Err(format!("{{{inner}}}: no field"));
        }
        route.push_str(pattern);
        vars.push(field.to_string());
    }
    if let Some(verb) = verb {
        check_camel(verb)?;
        route.push(':');
        route.push_str(verb);
    }
    Ok((vars, route))
}

/// Splits at the '/' that are not inside a `{...}` variable.
fn split_outside_braces(text: &str) -> Vec<String> {
    let mut segments = vec![String::new()];
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                segments.push(String::new());
                continue;
            }
            _ => {}
        }
        segments.last_mut().expect("never empty").push(c);
    }
    segments
}

/// Collection ids and custom verbs are lowerCamelCase (AIP-122, AIP-136).
fn check_camel(s: &str) -> Result<(), String> {
    let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a lowerCamelCase path literal"))
    }
}

/// Resolves a dotted field path of `message`: every step but the last a singular message
/// field, the last a singular string or integer (what a path segment can carry).
fn resolve_path_field(message: &MessageDescriptor, path: &str) -> Result<FieldDescriptor, String> {
    let mut current = message.clone();
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        let field = current
            .get_field_by_name(step)
            .ok_or_else(|| format!("{{{path}}}: {} has no field {step}", current.name()))?;
        if field.is_list() || field.is_map() {
            return Err(format!("{{{path}}}: {step} is repeated"));
        }
        let last = i + 1 == steps.len();
        match (last, field.kind()) {
            (false, Kind::Message(m)) => current = m,
            (false, _) => return Err(format!("{{{path}}}: {step} is not a message")),
            (
                true,
                Kind::String
                | Kind::Int32
                | Kind::Int64
                | Kind::Uint32
                | Kind::Uint64
                | Kind::Sint32
                | Kind::Sint64
                | Kind::Fixed32
                | Kind::Fixed64
                | Kind::Sfixed32
                | Kind::Sfixed64,
            ) => return Ok(field),
            (true, kind) => {
                return Err(format!(
                    "{{{path}}}: {step} is {kind:?}, not a string or integer"
                ))
            }
        }
    }
    unreachable!("split yields at least one step")
}

/// A field the transcoder can fill from query parameters: a primitive, a repeated primitive,
/// or a singular message whose own fields all qualify (HttpRule's rule for query parameters).
fn query_param_able(field: &FieldDescriptor, depth: usize) -> bool {
    match field.kind() {
        Kind::Message(m) => {
            !field.is_list()
                && !field.is_map()
                && depth < 4
                && m.fields().all(|f| query_param_able(&f, depth + 1))
        }
        _ => true,
    }
}

/// Every problem of one binding, on its own.
fn check_binding(b: &Binding) -> Vec<String> {
    let mut problems = Vec::new();
    let input = b.method.input();
    let (vars, _) = match parse_template(&b.path) {
        Ok(parsed) => parsed,
        Err(e) => return vec![format!("{}: {e}", b.name())],
    };
    let mut bound = BTreeSet::new();
    for var in &vars {
        if let Err(e) = resolve_path_field(&input, var) {
            problems.push(format!("{}: {e}", b.name()));
        }
        if !bound.insert(var.clone()) {
            problems.push(format!("{}: {{{var}}} bound twice", b.name()));
        }
    }
    let body_field = match b.body.as_str() {
        "" | "*" => None,
        name => match input.get_field_by_name(name) {
            Some(f) => Some(f),
            None => {
                problems.push(format!(
                    "{}: body {name:?} is not a field of {}",
                    b.name(),
                    input.name()
                ));
                None
            }
        },
    };
    if matches!(b.verb.as_str(), "get" | "delete") && !b.body.is_empty() {
        problems.push(format!("{}: {} must not have a body", b.name(), b.verb));
    }
    if matches!(b.verb.as_str(), "post" | "put" | "patch") && b.body.is_empty() {
        problems.push(format!(
            "{}: {} without a body (use body: \"*\" or a field)",
            b.name(),
            b.verb
        ));
    }
    if bound.contains(&b.body) {
        problems.push(format!(
            "{}: {:?} is both a path variable and the body",
            b.name(),
            b.body
        ));
    }
    let streaming_in = b.method.is_client_streaming();
    if streaming_in && b.body != "*" {
        problems.push(format!(
            "{}: a client-streaming method takes each message as the whole body (body: \"*\")",
            b.name()
        ));
    }
    // What neither the path nor the body carries comes from query parameters.
    if b.body != "*" {
        let top_bound: BTreeSet<&str> = vars
            .iter()
            .map(|v| v.split('.').next().unwrap_or_default())
            .collect();
        for f in input.fields() {
            let in_body = body_field.as_ref().is_some_and(|bf| bf.name() == f.name());
            let in_path = top_bound.contains(f.name()) && !matches!(f.kind(), Kind::Message(_));
            if !in_body && !in_path && !query_param_able(&f, 0) {
                problems.push(format!(
                    "{}: field {} can be sent neither in the path, the body nor the query",
                    b.name(),
                    f.name()
                ));
            }
        }
    }
    problems
}

/// Every problem of a set of bindings: each binding's own, and two bindings with the same verb
/// and path template (variables normalised to their patterns), which the transcoder could not
/// route apart.
fn check_bindings(bindings: &[Binding]) -> Vec<String> {
    let mut problems: Vec<String> = bindings.iter().flat_map(check_binding).collect();
    let mut routes: BTreeMap<(String, String), String> = BTreeMap::new();
    for b in bindings {
        let Ok((_, normalised)) = parse_template(&b.path) else {
            continue;
        };
        if let Some(first) = routes.insert((b.verb.clone(), normalised.clone()), b.name()) {
            problems.push(format!(
                "{} and {first} share the route {} {normalised}",
                b.name(),
                b.verb.to_uppercase()
            ));
        }
    }
    problems
}

/// The whole check over one encoded descriptor set: bindings read, every method annotated,
/// every binding valid. Returns the bindings for further assertions.
fn check_descriptor_set(encoded: &[u8]) -> Vec<Binding> {
    let pool = DescriptorPool::decode(encoded).expect("descriptor set decodes");
    let (bindings, mut problems) = read_bindings(&pool);
    problems.extend(check_bindings(&bindings));
    assert!(
        problems.is_empty(),
        "{} HTTP mapping problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    let methods = lnrs_methods(&pool);
    let annotated: BTreeSet<String> = bindings
        .iter()
        .map(|b| b.method.full_name().to_string())
        .collect();
    assert_eq!(annotated.len(), methods.len(), "every method has a rule");
    bindings
}

#[test]
fn every_rpc_has_a_valid_http_rule() {
    let bindings = check_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let methods = lnrs_methods(&pool);
    assert!(methods.len() >= 60, "every lnrs.v1 RPC: {}", methods.len());
    let services: BTreeSet<String> = methods
        .iter()
        .map(|m| m.parent_service().name().to_string())
        .collect();
    let expected = [
        "DataService",
        "EntityService",
        "EventService",
        "SnapshotService",
    ];
    assert_eq!(services, BTreeSet::from(expected.map(String::from)));
    eprintln!(
        "http: {} methods, {} bindings, all valid",
        methods.len(),
        bindings.len()
    );
    // The routes docs/CLIENTS.md shows with curl, pinned so a rename is a deliberate change.
    for (method, verb, path, body) in [
        ("GetMeasure", "get", "/v1/measures/{measure_id}", ""),
        ("ListMeasures", "get", "/v1/measures", ""),
        ("CreateMeasure", "post", "/v1/measures", "measure"),
        (
            "UpdateMeasure",
            "patch",
            "/v1/measures/{measure.measure_id}",
            "measure",
        ),
        ("DeleteMeasure", "delete", "/v1/measures/{measure_id}", ""),
        (
            "RestoreSnapshot",
            "post",
            "/v1/snapshots/{snapshot_id}:restore",
            "*",
        ),
        ("DeleteLink", "post", "/v1/links:delete", "*"),
        (
            "GetEntityHistory",
            "get",
            "/v1/history/{entity_type}/{entity_id=**}",
            "",
        ),
    ] {
        assert!(
            bindings.iter().any(|b| b.method.name() == method
                && b.verb == verb
                && b.path == path
                && b.body == body),
            "{method}: expected {verb} {path} body {body:?}"
        );
    }
}

/// The check must fail for each kind of broken annotation (so it cannot pass vacuously).
#[test]
fn the_http_check_rejects_broken_rules() {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let (good, problems) = read_bindings(&pool);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(check_bindings(&good).is_empty());
    let find = |method: &str| {
        good.iter()
            .position(|b| b.method.name() == method)
            .unwrap_or_else(|| panic!("{method} has a binding"))
    };
    type Break = fn(&mut Binding);
    let cases: [(&str, &str, Break, &str); 11] = [
        (
            "GetMeasure",
            "unknown path field",
            |b| b.path = "/v1/measures/{measure}".into(),
            "has no field",
        ),
        (
            "GetMeasure",
            "no /v1/ prefix",
            |b| b.path = "/measures/{measure_id}".into(),
            "/v1/",
        ),
        (
            "GetMeasure",
            "GET with a body",
            |b| b.body = "*".into(),
            "must not have a body",
        ),
        (
            "DeleteMeasure",
            "DELETE with a body",
            |b| b.body = "request_id".into(),
            "must not have a body",
        ),
        (
            "CreateMeasure",
            "unknown body field",
            |b| b.body = "measures".into(),
            "not a field",
        ),
        (
            "CreateMeasure",
            "POST without a body",
            |b| b.body.clear(),
            "without a body",
        ),
        (
            "UpdateMeasure",
            "path field is a message",
            |b| b.path = "/v1/measures/{measure}".into(),
            "not a string or integer",
        ),
        (
            "UpdateMeasure",
            "path field is the body",
            |b| {
                b.path = "/v1/measures/{request_id}".into();
                b.body = "request_id".into()
            },
            "both a path variable and the body",
        ),
        (
            "ListMeasures",
            "route taken by another method",
            |b| b.path = "/v1/areas".into(),
            "share the route",
        ),
        (
            "ImportSnapshot",
            "client stream with a field body",
            |b| b.body = "data".into(),
            "client-streaming",
        ),
        (
            "UpdateSnapshot",
            "map field left to the query",
            |b| {
                b.verb = "get".into();
                b.body.clear()
            },
            "neither in the path",
        ),
    ];
    for (method, what, break_it, expected) in cases {
        let mut bindings = good.clone();
        let i = find(method);
        break_it(&mut bindings[i]);
        let found = check_bindings(&bindings);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{method}, {what}: expected a problem containing {expected:?}, got {found:?}"
        );
    }
    // A method without a rule at all: drop the extension from a copy of the set.
    let ext = pool.get_extension_by_name("google.api.http").unwrap();
    let mut set = DynamicMessage::decode(
        pool.get_message_by_name("google.protobuf.FileDescriptorSet")
            .unwrap(),
        pb::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    strip_first_rule(&mut set, &ext);
    let stripped = DescriptorPool::decode(prost::Message::encode_to_vec(&set).as_slice()).unwrap();
    let (_, problems) = read_bindings(&stripped);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no google.api.http rule")),
        "{problems:?}"
    );
}

/// Removes the google.api.http option of the first lnrs.v1 method in a FileDescriptorSet.
fn strip_first_rule(set: &mut DynamicMessage, ext: &prost_reflect::ExtensionDescriptor) {
    let Some(Value::List(files)) = set.get_field_by_name_mut("file") else {
        panic!("files");
    };
    for file in files.iter_mut() {
        let file = file.as_message_mut().unwrap();
        if file
            .get_field_by_name("package")
            .and_then(|v| v.as_str().map(str::to_string))
            != Some("lnrs.v1".into())
        {
            continue;
        }
        let Some(Value::List(services)) = file.get_field_by_name_mut("service") else {
            continue;
        };
        for service in services.iter_mut() {
            let service = service.as_message_mut().unwrap();
            if let Some(Value::List(methods)) = service.get_field_by_name_mut("method") {
                if let Some(method) = methods.first_mut() {
                    let method = method.as_message_mut().unwrap();
                    if let Some(Value::Message(options)) = method.get_field_by_name_mut("options") {
                        assert!(options.has_extension(ext));
                        options.clear_extension(ext);
                        return;
                    }
                }
            }
        }
    }
    panic!("no annotated lnrs.v1 method found");
}

/// `lnrs descriptor-set --out FILE` (the real binary) writes a set Envoy can load: the same
/// bytes the server embeds, self-contained (google/api and google/protobuf included), every
/// service and every rule in it, and the google.rpc error detail types.
#[test]
fn descriptor_set_subcommand_writes_the_annotated_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lnrs.pb");
    let run = Command::new(env!("CARGO_BIN_EXE_lnrs"))
        .args(["descriptor-set", "--out"])
        .arg(&out)
        .output()
        .expect("run lnrs");
    assert!(
        run.status.success(),
        "lnrs descriptor-set failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = std::fs::read(&out).unwrap();
    assert_eq!(
        written,
        pb::FILE_DESCRIPTOR_SET,
        "the file is the embedded set"
    );
    let set: prost_types::FileDescriptorSet = prost::Message::decode(written.as_slice()).unwrap();
    let files: BTreeSet<&str> = set.file.iter().map(|f| f.name()).collect();
    for needed in [
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/descriptor.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "lnrs/v1/entity_service.proto",
        "lnrs/v1/snapshot_service.proto",
        "lnrs/v1/event_service.proto",
        "lnrs/v1/data_service.proto",
    ] {
        assert!(files.contains(needed), "{needed} missing from {files:?}");
    }
    // Self-contained: every import is in the set itself.
    for f in &set.file {
        for dep in &f.dependency {
            assert!(
                files.contains(dep.as_str()),
                "{}: import {dep} missing",
                f.name()
            );
        }
    }
    let bindings = check_descriptor_set(&written);
    assert!(bindings.len() >= 60);
    // Envoy's convert_grpc_status prints the error details only if their types are in the set.
    let pool = DescriptorPool::decode(written.as_slice()).unwrap();
    for detail in [
        "google.rpc.Status",
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.ResourceInfo",
        "google.rpc.PreconditionFailure",
    ] {
        assert!(
            pool.get_message_by_name(detail).is_some(),
            "{detail} missing"
        );
    }

    // A path it cannot write is a clear error and a failure exit.
    let bad = Command::new(env!("CARGO_BIN_EXE_lnrs"))
        .args(["descriptor-set", "--out"])
        .arg(dir.path().join("missing-dir").join("lnrs.pb"))
        .output()
        .expect("run lnrs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot write"));
}
