//! Derives the Rust view of the kernel ABI from its one C header: a host C program prints the
//! event layout's offsets and constants and the protocol enum (`c/layout.c`), so the two sides
//! can never drift apart.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let c_dir = Path::new("c");
    println!("cargo:rerun-if-changed=c/l7tap_events.h");
    println!("cargo:rerun-if-changed=c/layout.c");
    let dump = out.join("layout-dump");
    run(
        Command::new(env::var("HOST_CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-Wall", "-Werror", "-I"])
            .arg(c_dir)
            .arg(c_dir.join("layout.c"))
            .arg("-o")
            .arg(&dump),
        "cc (layout dump of c/l7tap_events.h)",
    );
    let layout = run(&mut Command::new(&dump), "layout dump");
    std::fs::write(out.join("layout.rs"), layout).unwrap();
}
