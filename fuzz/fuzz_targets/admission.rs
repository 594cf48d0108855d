//! Any bytes as the body of `POST /mutate` and `POST /validate`: decoding, the pool policy
//! and the mutation, with the invariant checks of `fuzz/check.rs` (shared with the stable
//! regression test `webhook/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../check.rs"]
mod check;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wi_webhook::admission::Admitter;

fn admitter() -> &'static Admitter {
    static ADMITTER: OnceLock<Admitter> = OnceLock::new();
    ADMITTER.get_or_init(check::admitter)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = runtime().block_on(check::check(admitter(), data));
});
