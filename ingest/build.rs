//! Compiles the kernel's protocol classifiers (`probes/bpf/classify_<protocol>.h`) for the
//! host, with the dispatch of `c/classify_host.c`, so that a pcap replay classifies
//! connections by the very rules the probes run: one source of truth.
fn main() {
    println!("cargo:rerun-if-changed=c/classify_host.c");
    println!("cargo:rerun-if-changed=../probes/bpf");
    println!("cargo:rerun-if-changed=../abi/c/l7tap_events.h");
    cc::Build::new()
        .file("c/classify_host.c")
        .include("../probes/bpf")
        .include("../abi/c")
        .flag("-std=gnu11")
        .warnings(true)
        .warnings_into_errors(true)
        .compile("l7tap_classify_host");
}
