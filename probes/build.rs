//! Builds the C eBPF objects with clang: the probes, against the kernel ABI header of the
//! `l7tap-abi` crate (`abi/c/l7tap_events.h`), from which that crate derives the Rust view,
//! and the floor program of the benchmark suite.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str, hint: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}. {hint}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

const INSTALL_HINT: &str =
    "Install the build tools with `bash ci/install-deps.sh` (clang, llvm, libbpf-dev, bpftool).";

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let bpf_dir = Path::new("bpf");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=../abi/c/l7tap_events.h");
    let abi_dir = Path::new("../abi/c");

    // vmlinux.h from the running kernel's BTF (CO-RE relocates it on other kernels).
    let vmlinux = out.join("vmlinux.h");
    if !vmlinux.exists() {
        let btf = env::var("L7TAP_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
        let header = run(
            Command::new("bpftool").args(["btf", "dump", "file", &btf, "format", "c"]),
            "bpftool btf dump",
            INSTALL_HINT,
        );
        std::fs::write(&vmlinux, header).unwrap();
    }

    for (source, object) in [
        ("l7tap.bpf.c", "l7tap.bpf.o"),
        ("floor.bpf.c", "floor.bpf.o"),
    ] {
        run(
            Command::new(env::var("CLANG").unwrap_or_else(|_| "clang".into()))
                .args([
                    "-target",
                    "bpf",
                    "-O2",
                    "-g",
                    "-Wall",
                    "-Werror",
                    "-D__TARGET_ARCH_x86",
                ])
                .arg("-I")
                .arg(&out)
                .arg("-I")
                .arg(bpf_dir)
                .arg("-I")
                .arg(abi_dir)
                .arg("-c")
                .arg(bpf_dir.join(source))
                .arg("-o")
                .arg(out.join(object)),
            "clang (BPF probes)",
            INSTALL_HINT,
        );
    }
}
