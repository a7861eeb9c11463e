//! What the Go crypto/tls probes (`bpf/go_tls.h`) need of one Go binary: its Go version
//! (from the build info, `.go.buildinfo`), the struct offsets that lead from a `*tls.Conn`
//! to its socket's fd for that version ([`GO_LAYOUTS`]), the address of the
//! `*net.TCPConn`-as-`net.Conn` itab, and the RET instructions of the hooked functions (found
//! with an x86 decoder: the returns are probed there, never with uretprobes).
//!
//! A binary must have its symbol table (`.symtab`: the functions and the itab; `go build
//! -ldflags=-s` removes it) and its build info (every Go >= 1.13 binary has it), be x86-64,
//! and be built by a Go version of [`GO_LAYOUTS`]; otherwise its crypto/tls is not attached
//! and the scan says why.
use object::{Object, ObjectSection, ObjectSymbol};

/// The build info section's magic.
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// The itab of `*net.TCPConn` as a `net.Conn` (the name's prefix changed in Go 1.22).
const TCP_CONN_ITABS: &[&str] = &[
    "go.itab.*net.TCPConn,net.Conn",
    "go:itab.*net.TCPConn,net.Conn",
];

/// Offsets from a `*tls.Conn` to its fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoLayout {
    /// `tls.Conn.conn`, a `net.Conn` interface (itab, data pointer).
    pub conn_iface: u32,
    /// `net.TCPConn.conn.fd`, the `*netFD`.
    pub tcp_conn_fd: u32,
    /// `netFD.pfd.Sysfd` (`pfd` is a `poll.FD`, after its 16-byte `fdMutex`).
    pub netfd_sysfd: u32,
}

/// The layouts per Go minor version (1.x, inclusive range), read from the Go sources of those
/// versions (`crypto/tls/conn.go`, `net/net.go`, `net/fd_posix.go`, `internal/poll/fd_unix.go`;
/// unchanged across them). The register ABI on amd64 starts at 1.17. Verified live with
/// Debian's Go 1.19 (`ci/accept/tls.py`).
pub const GO_LAYOUTS: &[(u32, u32, GoLayout)] = &[(
    17,
    23,
    GoLayout {
        conn_iface: 0,
        tcp_conn_fd: 0,
        netfd_sysfd: 16,
    },
)];

/// What the probes need of a Go binary whose crypto/tls functions were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// The Go version of the build info (`go1.19.8`).
    pub version: String,
    pub layout: GoLayout,
    /// Link-time address of `go.itab.*net.TCPConn,net.Conn`.
    pub tcp_conn_itab: u64,
}

/// A Go function found in the symbol table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoFunction {
    /// Link-time address.
    pub address: u64,
    pub size: u64,
}

/// The Go version the binary's build info names (`go1.19.8`), or None if it has no build
/// info (not a Go binary).
pub fn go_version<'data, R: object::ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> Result<Option<String>, String> {
    let Some(section) = file.section_by_name(".go.buildinfo") else {
        return Ok(None);
    };
    let data = section
        .data()
        .map_err(|e| format!("reading .go.buildinfo: {e}"))?;
    if !data.starts_with(BUILDINFO_MAGIC) || data.len() < 32 {
        return Err("malformed .go.buildinfo".into());
    }
    let pointer_size = usize::from(data[14]);
    let flags = data[15];
    if flags & 2 != 0 {
        // Go >= 1.18: the version and module strings follow the header, varint-prefixed.
        return Ok(Some(
            varint_string(&data[32..]).ok_or("malformed .go.buildinfo")?,
        ));
    }
    // Go <= 1.17: a pointer to the version's string header (pointer, length).
    let big_endian = flags & 1 != 0;
    let read_ptr = |bytes: &[u8]| -> Option<u64> {
        let b = bytes.get(..pointer_size)?;
        Some(match (pointer_size, big_endian) {
            (8, false) => u64::from_le_bytes(b.try_into().ok()?),
            (8, true) => u64::from_be_bytes(b.try_into().ok()?),
            (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
            (4, true) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
            _ => return None,
        })
    };
    let malformed = || "malformed .go.buildinfo".to_string();
    let header_addr = read_ptr(&data[16..]).ok_or_else(malformed)?;
    let header = bytes_at(file, header_addr, 2 * pointer_size as u64).ok_or_else(malformed)?;
    let str_addr = read_ptr(header).ok_or_else(malformed)?;
    let str_len = read_ptr(&header[pointer_size..]).ok_or_else(malformed)?;
    let text = bytes_at(file, str_addr, str_len).ok_or_else(malformed)?;
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

/// A varint-length-prefixed string.
fn varint_string(data: &[u8]) -> Option<String> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = *data.get(i)?;
        i += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let text = data.get(i..i.checked_add(usize::try_from(len).ok()?)?)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// `len` bytes at link-time address `addr`, from the section holding them.
fn bytes_at<'a, R: object::ReadRef<'a>>(
    file: &object::File<'a, R>,
    addr: u64,
    len: u64,
) -> Option<&'a [u8]> {
    file.sections().find_map(|s| {
        let end = s.address().checked_add(s.size())?;
        if addr < s.address() || addr.checked_add(len)? > end {
            return None;
        }
        let data = s.data().ok()?;
        let from = usize::try_from(addr - s.address()).ok()?;
        data.get(from..from.checked_add(usize::try_from(len).ok()?)?)
    })
}

/// The layout for a Go version (`go1.19.8`), if the table has it.
pub fn layout_for(version: &str) -> Option<GoLayout> {
    let rest = version.strip_prefix("go1.")?;
    let minor: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    GO_LAYOUTS
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&minor))
        .map(|&(_, _, layout)| layout)
}

/// What the probes need of this Go binary (already known to define crypto/tls functions),
/// or why it cannot be attached.
pub fn go_binary<'data, R: object::ReadRef<'data>>(
    file: &object::File<'data, R>,
    version: Option<String>,
) -> Result<GoBinary, String> {
    if file.architecture() != object::Architecture::X86_64 {
        return Err(format!(
            "a {:?} binary (only x86-64 is supported)",
            file.architecture()
        ));
    }
    let version = version.ok_or("no Go build info (.go.buildinfo): the Go version is unknown")?;
    let layout = layout_for(&version)
        .ok_or_else(|| format!("built by {version}, whose crypto/tls layout l7tap lacks"))?;
    let tcp_conn_itab = file
        .symbols()
        .find(|s| s.name().is_ok_and(|n| TCP_CONN_ITABS.contains(&n)))
        .map(|s| s.address())
        .ok_or("no go.itab.*net.TCPConn,net.Conn symbol: no TLS over TCP to read")?;
    Ok(GoBinary {
        version,
        layout,
        tcp_conn_itab,
    })
}

/// The file offsets of the RET instructions of a function whose code starts at file offset
/// `file_offset` (link-time address `func.address`), decoded from `code`, its bytes.
pub fn ret_offsets(code: &[u8], func: GoFunction, file_offset: u64) -> Result<Vec<u64>, String> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut decoder = Decoder::with_ip(64, code, func.address, DecoderOptions::NONE);
    let mut rets = Vec::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.is_invalid() {
            return Err(format!(
                "undecodable instruction at {:#x} (function at {:#x})",
                instr.ip(),
                func.address
            ));
        }
        if instr.mnemonic() == Mnemonic::Ret {
            rets.push(file_offset + (instr.ip() - func.address));
        }
    }
    if rets.is_empty() {
        return Err("no RET instruction found".into());
    }
    Ok(rets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_cover_the_register_abi_versions_of_the_table_only() {
        let known = GoLayout {
            conn_iface: 0,
            tcp_conn_fd: 0,
            netfd_sysfd: 16,
        };
        assert_eq!(layout_for("go1.19.8"), Some(known));
        assert_eq!(layout_for("go1.17"), Some(known));
        assert_eq!(layout_for("go1.23.4"), Some(known));
        assert_eq!(layout_for("go1.16.15"), None, "stack ABI");
        assert_eq!(layout_for("go1.24rc1"), None, "not in the table");
        assert_eq!(layout_for("devel +abc"), None);
    }

    #[test]
    fn varint_prefixed_strings() {
        assert_eq!(
            varint_string(b"\x08go1.19.8rest").as_deref(),
            Some("go1.19.8")
        );
        assert_eq!(varint_string(b"\x09go1.19.8").as_deref(), None, "too short");
        let mut long = vec![0x81, 0x01];
        long.extend(std::iter::repeat_n(b'a', 129));
        assert_eq!(varint_string(&long).map(|s| s.len()), Some(129));
    }

    #[test]
    fn rets_are_found_by_decoding_not_by_byte_value() {
        // mov eax, 0xc3 (the immediate holds a RET byte); ret; int3; ret 8
        let code = [0xb8, 0xc3, 0, 0, 0, 0xc3, 0xcc, 0xc2, 8, 0];
        let func = GoFunction {
            address: 0x401000,
            size: code.len() as u64,
        };
        assert_eq!(ret_offsets(&code, func, 0x1000).unwrap(), [0x1005, 0x1007]);
        assert!(ret_offsets(&[0x90, 0x90], func, 0).is_err(), "no RET");
    }
}
