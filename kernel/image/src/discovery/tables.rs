//! Finding the ACPI tables: from an RSDP firmware left, or, with no
//! firmware, by running QEMU's table-loader script from fw_cfg ourselves.
use crate::memory;
use crate::platform::AcpiEntry;
use acpi_tables::sdt::{self, HEADER_LEN, RSDP_V1_LEN, RSDP_V2_LEN};
use alloc::alloc::Layout;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use fw_cfg::loader::{self, Zone};
use fw_cfg::FwCfg;
use kernel::addr::PhysRange;
use kernel::mm::PAGE_SIZE;
use spin::Once;

/// Longest table we read: no real one comes near, a lying length must not
/// make us walk off into unmapped memory.
const MAX_TABLE: u32 = 1 << 20;
/// Most tables a root table may list.
const MAX_TABLES: usize = 256;

/// One table as firmware placed it: header and checksum verified.
pub struct RawTable {
    pub addr: u64,
    pub signature: [u8; 4],
    pub bytes: &'static [u8],
}

pub struct TableSet {
    /// How the tables were found, for the report.
    pub source: String,
    pub rsdp: u64,
    pub tables: Vec<RawTable>,
    /// Tables that failed their checks: reported, then left out.
    pub problems: Vec<String>,
}

impl TableSet {
    pub fn find(&self, sig: &[u8; 4]) -> Option<&'static [u8]> {
        self.tables
            .iter()
            .find(|t| &t.signature == sig)
            .map(|t| t.bytes)
    }
}

/// Bytes of firmware memory, if the arch says that range is mapped.
fn phys(addr: u64, len: usize) -> Result<&'static [u8], String> {
    let range = PhysRange::new(addr, len as u64);
    if addr == 0 || range.end < addr || !crate::arch::firmware_readable(range) {
        return Err(format!(
            "{len} bytes at {addr:#x} are not readable firmware memory"
        ));
    }
    // SAFETY: the arch confirmed the range is identity-mapped memory; ACPI
    // tables are never written after boot, so a shared 'static view is sound.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// A table at `addr`: its header first (for the length), then all of it.
fn table_at(addr: u64) -> Result<&'static [u8], String> {
    let head = phys(addr, HEADER_LEN)?;
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_TABLE {
        return Err(format!(
            "table at {addr:#x} ({}) claims {len} bytes",
            String::from_utf8_lossy(&head[..4])
        ));
    }
    phys(addr, (len as usize).max(HEADER_LEN))
}

static LOADED: Once<(AcpiEntry, TableSet)> = Once::new();

/// The tables at `entry`, loaded once for the run: the Arm boot path reads
/// its facts from them before the page allocator exists, and discovery
/// then uses the same set instead of running fw_cfg's table loader again.
pub fn load_once(entry: AcpiEntry) -> Result<&'static TableSet, String> {
    match LOADED.get() {
        Some((e, set)) if *e == entry => return Ok(set),
        // A second entry point in one run: not expected; kept apart.
        Some(_) => return load(entry).map(|set| &*Box::leak(Box::new(set))),
        None => {}
    }
    let set = load(entry)?;
    Ok(&LOADED.call_once(|| (entry, set)).1)
}

pub fn load(entry: AcpiEntry) -> Result<TableSet, String> {
    match entry {
        AcpiEntry::Rsdp(addr) => walk(addr, "ACPI (RSDP from the boot information)".into()),
        AcpiEntry::FwCfgMmio(base) => {
            let rsdp = run_table_loader(base)?;
            let how = format!("ACPI (fw_cfg at {base:#x}, table loader run by the kernel), RSDP");
            walk(rsdp, how)
        }
        AcpiEntry::None => Err("the boot path found no ACPI entry point".into()),
    }
}

/// Pages for fw_cfg DMA: the descriptor, then the bounce buffer.
const DMA_PAGES: usize = 4;
const DMA_DESC_LEN: u64 = 64;

/// Runs `etc/table-loader`: each file goes into pages of our own, pointers
/// and checksums are patched, and the RSDP's address is returned. Uses the
/// DMA interface when the device has one (one trap per transfer instead of
/// one per 8 bytes).
fn run_table_loader(base: u64) -> Result<u64, String> {
    // SAFETY: the fw_cfg register block the devicetree names, mapped as device memory.
    let mut plain = unsafe { fw_cfg::transport::Mmio::new(base as usize) };
    let dma = fw_cfg::features(&mut plain) & fw_cfg::transport::FEATURE_DMA != 0;
    let bounce = if dma {
        memory::alloc_pages(DMA_PAGES, PAGE_SIZE).ok()
    } else {
        None
    };
    let result = match bounce {
        Some(page) => {
            let p = page.as_u64();
            // SAFETY: the fw_cfg block as above; the descriptor and bounce
            // buffer are the pages just allocated, ours until freed below.
            let t = unsafe {
                fw_cfg::transport::MmioDma::new(
                    base as usize,
                    p,
                    p as *mut u8,
                    p + DMA_DESC_LEN,
                    (p + DMA_DESC_LEN) as *mut u8,
                    DMA_PAGES * PAGE_SIZE as usize - DMA_DESC_LEN as usize,
                )
            };
            load_with(FwCfg::new(t).map_err(|e| e.to_string())?)
        }
        None => load_with(FwCfg::new(plain).map_err(|e| e.to_string())?),
    };
    if let Some(page) = bounce {
        let _ = memory::free_pages(page, DMA_PAGES);
    }
    result
}

/// A blob's place before the page allocator exists (the Arm boot path
/// reads its facts first): the heap, which lies inside the kernel image,
/// identity-mapped and kept from the page allocator. Never freed, as
/// firmware's tables are not.
fn heap_place(size: usize, align: u64) -> Option<u64> {
    let align = usize::try_from(align).ok()?.max(8);
    let layout = Layout::from_size_align(size.max(1), align).ok()?;
    // SAFETY: the layout's size is not zero; the block is never freed.
    let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
    (!p.is_null()).then_some(p as u64)
}

fn load_with<T: fw_cfg::Transport>(mut fw: FwCfg<T>) -> Result<u64, String> {
    let script = fw
        .read_file("etc/table-loader")
        .map_err(|e| e.to_string())?;
    let mut fetch_error = None;
    let fetch = |name: &str| {
        fw.read_file(name)
            .map_err(|e| fetch_error = Some(e.to_string()))
            .ok()
    };
    let place = |_: &str, size: usize, align: u64, _: Zone| {
        let pages = size.div_ceil(PAGE_SIZE as usize).max(1);
        memory::alloc_pages(pages, align.max(PAGE_SIZE))
            .ok()
            .map(|p| p.as_u64())
            .or_else(|| heap_place(size, align))
    };
    let loaded = loader::run(&script, fetch, place).map_err(|e| match &fetch_error {
        Some(f) => format!("{e} ({f})"),
        None => e.to_string(),
    })?;
    for blob in &loaded.blobs {
        // SAFETY: `place` gave this blob freshly allocated pages of at least
        // its size; nothing else refers to them. They stay allocated (as
        // firmware would reserve them) for the whole run.
        unsafe {
            core::ptr::copy_nonoverlapping(
                blob.data.as_ptr(),
                blob.addr as *mut u8,
                blob.data.len(),
            )
        };
    }
    if loaded.skipped > 0 {
        log::debug!(
            "table loader: {} command(s) not needed without firmware skipped",
            loaded.skipped
        );
    }
    loaded
        .find("etc/acpi/rsdp")
        .map(|b| b.addr)
        .ok_or_else(|| "the table loader allocated no etc/acpi/rsdp".into())
}

fn walk(rsdp_addr: u64, source: String) -> Result<TableSet, String> {
    let v1 = phys(rsdp_addr, RSDP_V1_LEN)?;
    let rsdp_len = if v1[15] >= 2 {
        RSDP_V2_LEN
    } else {
        RSDP_V1_LEN
    };
    let rsdp = sdt::parse_rsdp(phys(rsdp_addr, rsdp_len)?).map_err(|e| e.to_string())?;
    let (root_addr, root_sig) = rsdp.root_table();
    let root = table_at(root_addr)?;
    let addrs = sdt::parse_root_table(root, root_sig).map_err(|e| e.to_string())?;
    let mut set = TableSet {
        source,
        rsdp: rsdp_addr,
        tables: Vec::new(),
        problems: Vec::new(),
    };
    if addrs.len() > MAX_TABLES {
        set.problems.push(format!(
            "root table lists {} tables; reading the first {MAX_TABLES}",
            addrs.len()
        ));
    }
    for &addr in addrs.iter().take(MAX_TABLES) {
        match table_at(addr).and_then(|b| sdt::parse_table(b, None).map_err(|e| e.to_string())) {
            Ok((h, t)) => set.tables.push(RawTable {
                addr,
                signature: h.signature,
                bytes: t.data,
            }),
            Err(e) => set.problems.push(e),
        }
    }
    if let Err(e) = add_dsdt(&mut set) {
        set.problems.push(e);
    }
    Ok(set)
}

/// The DSDT, which the root table does not list: the FADT points to it.
fn add_dsdt(set: &mut TableSet) -> Result<(), String> {
    let Some(fadt) = set.find(b"FACP") else {
        return Ok(());
    };
    let addr = acpi_tables::fadt::parse(fadt)
        .map_err(|e| e.to_string())?
        .dsdt;
    if addr == 0 {
        return Err("the FADT names no DSDT".into());
    }
    let (h, t) = table_at(addr)
        .and_then(|b| sdt::parse_table(b, Some(*b"DSDT")).map_err(|e| e.to_string()))?;
    set.tables.push(RawTable {
        addr,
        signature: h.signature,
        bytes: t.data,
    });
    Ok(())
}

/// What AML may touch while discovery evaluates `_CRS` and friends:
/// firmware memory the arch maps, the x86 I/O ports, and config space
/// through the MCFG's ECAM windows. Anything else reads as all ones and
/// ignores writes (what a bus does for nothing there).
pub struct AmlPlatform {
    pub ecam: Vec<super::EcamWindow>,
}

fn width_bytes(w: acpi_aml::AccessWidth) -> usize {
    match w {
        acpi_aml::AccessWidth::U8 => 1,
        acpi_aml::AccessWidth::U16 => 2,
        acpi_aml::AccessWidth::U32 => 4,
        acpi_aml::AccessWidth::U64 => 8,
    }
}

impl AmlPlatform {
    fn config(&self, f: acpi_aml::PciFunction) -> Option<(pci::ecam::Ecam, pci::config::Bdf)> {
        let w = self
            .ecam
            .iter()
            .find(|w| w.segment == f.segment && (w.start_bus..=w.end_bus).contains(&f.bus))?;
        Some((
            crate::pcie::ecam(w)?,
            pci::config::Bdf::new(f.bus, f.device, f.function)?,
        ))
    }
}

impl acpi_aml::Platform for AmlPlatform {
    /// Only memory already mapped as normal memory (RAM, the tables): an
    /// operation region elsewhere may be MMIO, which must not be mapped as
    /// memory on AML's say-so, nor read with side effects.
    fn read_memory(&self, address: u64, width: acpi_aml::AccessWidth) -> u64 {
        let n = width_bytes(width);
        let normal = |a: u64| crate::mapping::kind_at(a) == Some(kernel::idmap::MemKind::Normal);
        if !normal(address) || !normal(address + n as u64 - 1) {
            log::debug!("AML read of unmapped or device memory at {address:#x} answered all-ones");
            return u64::MAX;
        }
        match phys(address, n) {
            Ok(b) => {
                let mut v = [0u8; 8];
                v[..n].copy_from_slice(b);
                u64::from_le_bytes(v)
            }
            Err(_) => u64::MAX,
        }
    }

    /// Firmware memory is not ours to write; AML that does (a mailbox in
    /// RAM) gets nothing.
    fn write_memory(&self, address: u64, _: acpi_aml::AccessWidth, _: u64) {
        log::debug!("AML write to memory at {address:#x} dropped");
    }

    fn read_io(&self, port: u16, width: acpi_aml::AccessWidth) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            use x86_64::instructions::port::Port;
            // SAFETY: a port the firmware's own AML reads; reading an I/O
            // port does not touch memory.
            unsafe {
                match width {
                    acpi_aml::AccessWidth::U8 => u32::from(Port::<u8>::new(port).read()),
                    acpi_aml::AccessWidth::U16 => u32::from(Port::<u16>::new(port).read()),
                    _ => Port::<u32>::new(port).read(),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (port, width);
            u32::MAX
        }
    }

    fn write_io(&self, port: u16, width: acpi_aml::AccessWidth, value: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use x86_64::instructions::port::Port;
            // SAFETY: a port the firmware's own AML writes, as firmware
            // would on this machine; it does not touch memory we own.
            unsafe {
                match width {
                    acpi_aml::AccessWidth::U8 => Port::<u8>::new(port).write(value as u8),
                    acpi_aml::AccessWidth::U16 => Port::<u16>::new(port).write(value as u16),
                    _ => Port::<u32>::new(port).write(value),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (port, width, value);
    }

    fn read_pci(&self, f: acpi_aml::PciFunction, offset: u16, width: acpi_aml::AccessWidth) -> u32 {
        let Some((ecam, bdf)) = self.config(f) else {
            return u32::MAX;
        };
        let aligned = offset & !3;
        let Ok(word) = ecam.try_read32(bdf, aligned) else {
            return u32::MAX;
        };
        let shifted = word >> ((offset & 3) * 8);
        match width_bytes(width) {
            1 => shifted & 0xff,
            2 => shifted & 0xffff,
            _ => shifted,
        }
    }

    /// Config writes from AML are dropped: enumeration owns config space.
    fn write_pci(&self, f: acpi_aml::PciFunction, offset: u16, _: acpi_aml::AccessWidth, _: u32) {
        log::debug!("AML config write to {f:?} offset {offset:#x} dropped");
    }

    fn now_ns(&self) -> u64 {
        crate::arch::now_ns()
    }

    fn stall_us(&self, us: u64) {
        let t0 = crate::arch::now_ns();
        // AML stalls are short (the spec asks for at most 100 us); the cap
        // keeps a bad table from stopping the boot.
        let ns = us.min(100_000) * 1000;
        while crate::arch::now_ns() - t0 < ns {
            core::hint::spin_loop();
        }
    }
}
