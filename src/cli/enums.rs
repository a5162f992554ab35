//! Proto enums as command-line values: `--kind link-created` is `EVENT_KIND_LINK_CREATED`.
//! The values are read from the generated enum itself, so the CLI never re-types its variants
//! and a variant added to the proto is accepted at once.

/// Numbers a proto enum may skip: retired values stay reserved, never reused.
const MAX_RESERVED_GAP: i32 = 4;

/// Every variant of a proto enum but UNSPECIFIED (0), in number order. Proto enums here are
/// numbered from 1 with gaps only where a retired value is reserved (a unit test checks this
/// against the descriptors).
pub fn variants<E: TryFrom<i32>>() -> Vec<E> {
    let mut out = Vec::new();
    let mut gap = 0;
    for i in 1.. {
        match E::try_from(i) {
            Ok(e) => {
                out.push(e);
                gap = 0;
            }
            Err(_) if gap < MAX_RESERVED_GAP => gap += 1,
            Err(_) => break,
        }
    }
    out
}

/// The command-line value of a proto enum name: without `prefix`, lower case, dashes.
pub fn value_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Declares `$name`, a clap value (`ValueEnum`) wrapping the proto enum `$proto`, whose values
/// are the variants' names without `$prefix` (see [`value_name`]).
macro_rules! proto_value_enum {
    ($(#[$doc:meta])* $name:ident($proto:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub $proto);

        impl $name {
            /// Every value with its name; built once (clap wants `'static` names).
            fn all() -> &'static [($name, &'static str)] {
                static ALL: std::sync::LazyLock<Vec<($name, &'static str)>> =
                    std::sync::LazyLock::new(|| {
                        $crate::cli::enums::variants::<$proto>()
                            .into_iter()
                            .map(|v| {
                                let name = $crate::cli::enums::value_name(v.as_str_name(), $prefix);
                                ($name(v), &*Box::leak(name.into_boxed_str()))
                            })
                            .collect()
                    });
                &ALL
            }
        }

        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                static VARIANTS: std::sync::LazyLock<Vec<$name>> =
                    std::sync::LazyLock::new(|| $name::all().iter().map(|(v, _)| *v).collect());
                &VARIANTS
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Self::all()
                    .iter()
                    .find(|(v, _)| v == self)
                    .map(|(_, name)| clap::builder::PossibleValue::new(*name))
            }
        }
    };
}
pub(crate) use proto_value_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message;

    #[test]
    fn values_drop_the_prefix_and_use_dashes() {
        assert_eq!(
            value_name("EVENT_KIND_LINK_CREATED", "EVENT_KIND_"),
            "link-created"
        );
        assert_eq!(
            value_name("SNAPSHOT_OPERATION_PRE_RESTORE", "SNAPSHOT_OPERATION_"),
            "pre-restore"
        );
    }

    /// `variants` stops at the first unused number: every proto enum must be dense.
    #[test]
    fn every_proto_enum_is_numbered_densely_from_zero() {
        let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let ours = set.file.iter().filter(|f| f.package() == "lnrs.v1");
        for e in ours.flat_map(|f| &f.enum_type) {
            let numbers: Vec<i32> = e.value.iter().map(|v| v.number()).collect();
            let reserved: Vec<i32> = e
                .reserved_range
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .collect();
            let max = numbers.iter().copied().max().unwrap_or(0);
            let dense: Vec<i32> = (0..=max).filter(|n| !reserved.contains(n)).collect();
            assert_eq!(
                numbers,
                dense,
                "{}: dense but for reserved numbers",
                e.name()
            );
            assert!(reserved.len() < MAX_RESERVED_GAP as usize, "{}", e.name());
            if e.name() == "EventKind" {
                assert_eq!(variants::<pb::EventKind>().len(), numbers.len() - 1);
            }
        }
    }
}
