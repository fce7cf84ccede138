//! The kernel command line: space-separated `key=value` words (a bare word
//! is a key with an empty value), as given by `/chosen/bootargs` or the PVH
//! start info.

/// Iterates `(key, value)` pairs of a command line.
pub fn pairs(cmdline: &str) -> impl Iterator<Item = (&str, &str)> {
    cmdline
        .split_ascii_whitespace()
        .map(|word| word.split_once('=').unwrap_or((word, "")))
}

/// The value of the last occurrence of `key`, if any.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    pairs(cmdline)
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .last()
}

/// How a run ends, from the `exit=` word: only a board that has the
/// mechanism names it; real hardware gets the firmware's power-off and the
/// verdict is the TAP stream alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMethod {
    /// `exit=semihosting` (aarch64): SYS_EXIT with 0 (pass) or 1 (fail).
    Semihosting,
    /// `exit=isa-debug-exit` (x86): QEMU's isa-debug-exit port.
    IsaDebugExit,
    /// No `exit=` word: PSCI SYSTEM_OFF on aarch64, ACPI power-off (or a
    /// halt) on x86. No exit status.
    Firmware,
}

/// The exit method the command line names; `Err` carries an `exit=`
/// value that names no method (the caller reports it and powers off).
pub fn exit_method(cmdline: &str) -> Result<ExitMethod, &str> {
    match get(cmdline, "exit") {
        None => Ok(ExitMethod::Firmware),
        Some("semihosting") => Ok(ExitMethod::Semihosting),
        Some("isa-debug-exit") => Ok(ExitMethod::IsaDebugExit),
        Some(other) => Err(other),
    }
}

/// Parses a QEMU-style size (`1G`, `512M`, `4096K`, plain bytes; suffixes
/// are binary units, case-insensitive, an optional trailing `B`/`iB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| {
            t.strip_suffix(['B', 'b'])
                .filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic()))
        })
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        // QEMU's `-m` takes a plain number as MiB.
        _ => (t, 20),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_get() {
        let c = "filter=mm::* exclude=arch::timer verbose qemu.mem=1G filter=x";
        assert_eq!(get(c, "filter"), Some("x"));
        assert_eq!(get(c, "exclude"), Some("arch::timer"));
        assert_eq!(get(c, "verbose"), Some(""));
        assert_eq!(get(c, "missing"), None);
        assert_eq!(pairs("").count(), 0);
    }

    #[test]
    fn exit_methods() {
        assert_eq!(exit_method("log=debug"), Ok(ExitMethod::Firmware));
        assert_eq!(
            exit_method("exit=semihosting log=debug"),
            Ok(ExitMethod::Semihosting)
        );
        assert_eq!(
            exit_method("exit=isa-debug-exit"),
            Ok(ExitMethod::IsaDebugExit)
        );
        assert_eq!(exit_method("exit=semihosting exit=psci"), Err("psci"));
        assert_eq!(exit_method("exit="), Err(""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1024"), Some(1 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("x1G"), None);
        assert_eq!(parse_size("99999999999999T"), None);
    }
}
