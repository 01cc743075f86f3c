//! `include/iotseal.h` is what cbindgen makes of `src/lib.rs` with `cbindgen.toml`, byte for
//! byte. `IOTSEAL_REGEN_HEADER=1 cargo test -p iotseal-c --test header` rewrites it.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = dir.join("include/iotseal.h");
    if std::env::var_os("IOTSEAL_REGEN_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("writing include/iotseal.h");
        return;
    }
    let current = std::fs::read(&path).unwrap_or_default();
    assert!(
        current == generated,
        "include/iotseal.h differs from what cbindgen makes of src/lib.rs: run \
         IOTSEAL_REGEN_HEADER=1 cargo test -p iotseal-c --test header (and review the diff)"
    );
}
