//! YAML out, the same for every command and generated manifest: strings on one line (no
//! folded `>` blocks, so a description greps as it reads), multi-line strings as `|` blocks.

use serde::Serialize;

pub fn to_string<T: Serialize>(value: &T) -> String {
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    serde_saphyr::to_string_with_options(value, options)
        .expect("JSON-compatible values serialise as YAML")
}
