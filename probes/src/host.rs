//! What the host must provide before probes can attach: privileges and a mounted tracefs.
//! Each failure is one line that says what is missing and how to fix it.
use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "l7tap needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {missing}); \
         run it with sudo or `setcap cap_bpf,cap_perfmon+ep $(which l7tap)`"
    )]
    Privileges { missing: String },
    #[error(
        "tracefs is not mounted and mounting it failed ({source}); \
         run `mount -t tracefs nodev {TRACEFS}` as root, or in a container add `-v /sys/kernel/tracing:/sys/kernel/tracing`"
    )]
    Tracefs {
        #[source]
        source: std::io::Error,
    },
}

/// Effective capabilities of this process, from /proc/self/status.
fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_privileges() -> Result<(), HostError> {
    let caps = effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HostError::Privileges {
            missing: missing.join(", "),
        })
    }
}

fn tracefs_present() -> bool {
    Path::new(TRACEFS).join("events").is_dir() || Path::new(DEBUGFS_TRACING).join("events").is_dir()
}

/// Mounts tracefs at /sys/kernel/tracing when neither place aya looks in has it.
pub fn ensure_tracefs() -> Result<(), HostError> {
    if tracefs_present() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS).unwrap();
    let fstype = std::ffi::CString::new("tracefs").unwrap();
    let source = std::ffi::CString::new("nodev").unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is
    // null, which mount(2) accepts for tracefs.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(HostError::Tracefs {
            source: std::io::Error::last_os_error(),
        });
    }
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}
