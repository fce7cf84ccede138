//! A virtual IOMMU instance of one guest (Linux iommufd's
//! `IOMMU_VIOMMU_ALLOC`, `IOMMU_VDEVICE_ALLOC` and `IOMMU_HWPT_INVALIDATE`
//! on a vIOMMU): the guest names its devices by virtual stream ids, owns
//! their stage-1 tables and context descriptors, and asks for
//! invalidations in its own ids. The object binds virtual ids to the
//! physical devices the guest was given, checks each request of a batch,
//! and translates the batch into physical requests (physical device, the
//! vIOMMU's VMID) for the driver. A batch with one bad request is refused
//! whole: nothing of it reaches the hardware.
use super::domain::DeviceId;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// 4 KiB pages: the unit of [`Request::TlbByAddress`].
const PAGE_SHIFT: u32 = 12;

/// A guest's invalidation request, in its own ids (architecture-neutral:
/// on SMMUv3 these are its TLBI_NH_* and CFGI_CD* commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Every stage-1 TLB entry of `asid`.
    TlbByAsid { asid: u16 },
    /// Stage-1 TLB entries of `asid` for `pages` 4 KiB pages from `addr`;
    /// `leaf`: only last-level entries changed.
    TlbByAddress {
        asid: u16,
        addr: u64,
        pages: u64,
        leaf: bool,
    },
    /// Every stage-1 TLB entry of the guest.
    TlbAll,
    /// The cached context descriptor `ssid` (every one when `None`) of the
    /// device the guest calls `vsid`.
    ConfigByVsid { vsid: u32, ssid: Option<u32> },
    /// Every cached context descriptor of every device of the guest.
    ConfigAll,
}

/// The kinds of [`Request`], for the set a vIOMMU allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    TlbByAsid,
    TlbByAddress,
    TlbAll,
    ConfigByVsid,
    ConfigAll,
}

impl Request {
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::TlbByAsid { .. } => RequestKind::TlbByAsid,
            Request::TlbByAddress { .. } => RequestKind::TlbByAddress,
            Request::TlbAll => RequestKind::TlbAll,
            Request::ConfigByVsid { .. } => RequestKind::ConfigByVsid,
            Request::ConfigAll => RequestKind::ConfigAll,
        }
    }
}

/// A checked request in physical terms, for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhysRequest {
    TlbByAsid {
        vmid: u16,
        asid: u16,
    },
    TlbByAddress {
        vmid: u16,
        asid: u16,
        addr: u64,
        pages: u64,
        leaf: bool,
    },
    TlbAll {
        vmid: u16,
    },
    /// Context descriptor `ssid` (every one when `None`) of `dev`.
    Config {
        dev: DeviceId,
        ssid: Option<u32>,
    },
}

/// What the guest's IOMMU may name: the widths its virtual ID registers
/// advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub asid_bits: u8,
    pub ssid_bits: u8,
    /// Stage-1 input address bits.
    pub va_bits: u8,
}

/// Why a request of a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The guest owns no device of this virtual stream id.
    UnknownVsid(u32),
    AsidOutOfRange(u16),
    SsidOutOfRange(u32),
    /// Unaligned, empty, or past the guest's input address size.
    RangeOutOfBounds {
        addr: u64,
        pages: u64,
    },
    /// A kind outside the vIOMMU's allowed set.
    NotAllowed(RequestKind),
}

/// Why binding a virtual stream id failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The device was not given to this guest.
    UnknownDevice(DeviceId),
    VsidInUse(u32),
    DeviceBound(DeviceId),
}

/// A refused batch: the first bad request's index and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub why: Refusal,
}

/// What [`Viommu::invalidate`] returns on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViommuError<E> {
    Refused(Refused),
    Hardware(E),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalidation request {} refused: ", self.index)?;
        match self.why {
            Refusal::UnknownVsid(v) => write!(f, "virtual stream id {v:#x} is not the guest's"),
            Refusal::AsidOutOfRange(a) => write!(f, "ASID {a:#x} out of range"),
            Refusal::SsidOutOfRange(s) => write!(f, "substream id {s:#x} out of range"),
            Refusal::RangeOutOfBounds { addr, pages } => {
                write!(f, "{pages} page(s) at {addr:#x} out of bounds")
            }
            Refusal::NotAllowed(k) => write!(f, "{k:?} is not allowed"),
        }
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::UnknownDevice(d) => write!(f, "device {d} was not given to the guest"),
            BindError::VsidInUse(v) => write!(f, "virtual stream id {v:#x} already bound"),
            BindError::DeviceBound(d) => write!(f, "device {d} already has a virtual id"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for ViommuError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViommuError::Refused(r) => r.fmt(f),
            ViommuError::Hardware(e) => write!(f, "forwarding failed: {e}"),
        }
    }
}

/// What a driver does with a checked batch: runs it as one batch of
/// invalidations ending in a sync.
pub trait ViommuHw {
    type Error;
    fn invalidate_physical(&mut self, batch: &[PhysRequest]) -> Result<(), Self::Error>;
}

/// One guest's virtual IOMMU.
#[derive(Debug, Clone)]
pub struct Viommu {
    vmid: u16,
    limits: Limits,
    /// The physical devices given to the guest.
    devices: Vec<DeviceId>,
    allowed: Vec<RequestKind>,
    bound: BTreeMap<u32, DeviceId>,
}

impl Viommu {
    /// A vIOMMU over the stage 2 tagged `vmid`, for `devices`, allowing
    /// every request kind.
    pub fn new(vmid: u16, devices: &[DeviceId], limits: Limits) -> Viommu {
        Viommu {
            vmid,
            limits,
            devices: devices.to_vec(),
            allowed: alloc::vec![
                RequestKind::TlbByAsid,
                RequestKind::TlbByAddress,
                RequestKind::TlbAll,
                RequestKind::ConfigByVsid,
                RequestKind::ConfigAll,
            ],
            bound: BTreeMap::new(),
        }
    }

    /// Only `kinds` are accepted from now on.
    pub fn allow_only(&mut self, kinds: &[RequestKind]) {
        self.allowed = kinds.to_vec();
    }

    pub fn vmid(&self) -> u16 {
        self.vmid
    }

    /// The guest calls `dev` `vsid` from now on.
    pub fn bind(&mut self, vsid: u32, dev: DeviceId) -> Result<(), BindError> {
        if !self.devices.contains(&dev) {
            return Err(BindError::UnknownDevice(dev));
        }
        if self.bound.contains_key(&vsid) {
            return Err(BindError::VsidInUse(vsid));
        }
        if self.bound.values().any(|&d| d == dev) {
            return Err(BindError::DeviceBound(dev));
        }
        self.bound.insert(vsid, dev);
        Ok(())
    }

    pub fn unbind(&mut self, vsid: u32) -> Option<DeviceId> {
        self.bound.remove(&vsid)
    }

    /// The physical device behind `vsid`.
    pub fn device(&self, vsid: u32) -> Option<DeviceId> {
        self.bound.get(&vsid).copied()
    }

    fn check(&self, r: &Request) -> Result<(), Refusal> {
        if !self.allowed.contains(&r.kind()) {
            return Err(Refusal::NotAllowed(r.kind()));
        }
        let asid_ok = |asid: u16| u32::from(asid) >> self.limits.asid_bits.min(16) == 0;
        match *r {
            Request::TlbByAsid { asid } if !asid_ok(asid) => Err(Refusal::AsidOutOfRange(asid)),
            Request::TlbByAddress {
                asid, addr, pages, ..
            } => {
                if !asid_ok(asid) {
                    return Err(Refusal::AsidOutOfRange(asid));
                }
                let end = pages
                    .checked_shl(PAGE_SHIFT)
                    .filter(|&b| b >> PAGE_SHIFT == pages)
                    .and_then(|b| addr.checked_add(b));
                let top = 1u128 << self.limits.va_bits.min(64);
                match end {
                    Some(end) if pages > 0 && addr.trailing_zeros() >= PAGE_SHIFT => {
                        if u128::from(end) <= top {
                            Ok(())
                        } else {
                            Err(Refusal::RangeOutOfBounds { addr, pages })
                        }
                    }
                    _ => Err(Refusal::RangeOutOfBounds { addr, pages }),
                }
            }
            Request::ConfigByVsid { vsid, ssid } => {
                if !self.bound.contains_key(&vsid) {
                    return Err(Refusal::UnknownVsid(vsid));
                }
                match ssid {
                    Some(s) if u64::from(s) >> self.limits.ssid_bits.min(32) != 0 => {
                        Err(Refusal::SsidOutOfRange(s))
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Checks every request of `batch` and translates them into physical
    /// ones; the first bad request refuses the whole batch.
    pub fn translate(&self, batch: &[Request]) -> Result<Vec<PhysRequest>, Refused> {
        for (index, r) in batch.iter().enumerate() {
            self.check(r).map_err(|why| Refused { index, why })?;
        }
        let vmid = self.vmid;
        let mut out = Vec::new();
        for r in batch {
            match *r {
                Request::TlbByAsid { asid } => out.push(PhysRequest::TlbByAsid { vmid, asid }),
                Request::TlbByAddress {
                    asid,
                    addr,
                    pages,
                    leaf,
                } => out.push(PhysRequest::TlbByAddress {
                    vmid,
                    asid,
                    addr,
                    pages,
                    leaf,
                }),
                Request::TlbAll => out.push(PhysRequest::TlbAll { vmid }),
                Request::ConfigByVsid { vsid, ssid } => {
                    // Checked above: the vsid is bound.
                    if let Some(&dev) = self.bound.get(&vsid) {
                        out.push(PhysRequest::Config { dev, ssid });
                    }
                }
                // The guest's "everything" is its own devices, never the
                // whole unit's configuration cache.
                Request::ConfigAll => out.extend(
                    self.bound
                        .values()
                        .map(|&dev| PhysRequest::Config { dev, ssid: None }),
                ),
            }
        }
        Ok(out)
    }

    /// Checks and forwards `batch` to `hw` as one batch; a refused batch
    /// never reaches it.
    pub fn invalidate<H: ViommuHw>(
        &self,
        hw: &mut H,
        batch: &[Request],
    ) -> Result<(), ViommuError<H::Error>> {
        let phys = self.translate(batch).map_err(ViommuError::Refused)?;
        if phys.is_empty() {
            return Ok(());
        }
        hw.invalidate_physical(&phys).map_err(ViommuError::Hardware)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        asid_bits: 8,
        ssid_bits: 6,
        va_bits: 39,
    };
    const DEV_A: DeviceId = DeviceId(0x10);
    const DEV_B: DeviceId = DeviceId(0x18);

    fn viommu() -> Viommu {
        let mut v = Viommu::new(5, &[DEV_A, DEV_B], LIMITS);
        v.bind(1, DEV_A).unwrap();
        v
    }

    #[derive(Default)]
    struct Recorder(Vec<Vec<PhysRequest>>);
    impl ViommuHw for Recorder {
        type Error = ();
        fn invalidate_physical(&mut self, batch: &[PhysRequest]) -> Result<(), ()> {
            self.0.push(batch.to_vec());
            Ok(())
        }
    }

    #[test]
    fn bind_refuses_unknown_devices_and_duplicates() {
        let mut v = viommu();
        assert_eq!(
            v.bind(2, DeviceId(0x99)),
            Err(BindError::UnknownDevice(DeviceId(0x99)))
        );
        assert_eq!(v.bind(1, DEV_B), Err(BindError::VsidInUse(1)));
        assert_eq!(v.bind(3, DEV_A), Err(BindError::DeviceBound(DEV_A)));
        assert_eq!(v.bind(2, DEV_B), Ok(()));
        assert_eq!((v.device(1), v.device(2)), (Some(DEV_A), Some(DEV_B)));
        assert_eq!(v.unbind(2), Some(DEV_B));
        assert_eq!(v.device(2), None);
    }

    #[test]
    fn requests_translate_to_physical_ids_and_the_vmid() {
        let mut v = viommu();
        v.bind(7, DEV_B).unwrap();
        let batch = [
            Request::TlbByAsid { asid: 3 },
            Request::TlbByAddress {
                asid: 3,
                addr: 0x4000,
                pages: 2,
                leaf: true,
            },
            Request::TlbAll,
            Request::ConfigByVsid {
                vsid: 7,
                ssid: Some(0),
            },
            Request::ConfigAll,
        ];
        assert_eq!(
            v.translate(&batch).unwrap(),
            [
                PhysRequest::TlbByAsid { vmid: 5, asid: 3 },
                PhysRequest::TlbByAddress {
                    vmid: 5,
                    asid: 3,
                    addr: 0x4000,
                    pages: 2,
                    leaf: true
                },
                PhysRequest::TlbAll { vmid: 5 },
                PhysRequest::Config {
                    dev: DEV_B,
                    ssid: Some(0)
                },
                PhysRequest::Config {
                    dev: DEV_A,
                    ssid: None
                },
                PhysRequest::Config {
                    dev: DEV_B,
                    ssid: None
                },
            ]
        );
    }

    /// Each refusal names the bad request's index, and nothing of the
    /// batch is forwarded, not even the good requests before it.
    #[test]
    fn a_bad_request_refuses_the_whole_batch() {
        let good = Request::TlbByAsid { asid: 1 };
        let cases = [
            (
                Request::ConfigByVsid {
                    vsid: 9,
                    ssid: None,
                },
                Refusal::UnknownVsid(9),
            ),
            (
                Request::TlbByAsid { asid: 0x100 },
                Refusal::AsidOutOfRange(0x100),
            ),
            (
                Request::TlbByAddress {
                    asid: 0x1ff,
                    addr: 0,
                    pages: 1,
                    leaf: true,
                },
                Refusal::AsidOutOfRange(0x1ff),
            ),
            (
                Request::ConfigByVsid {
                    vsid: 1,
                    ssid: Some(64),
                },
                Refusal::SsidOutOfRange(64),
            ),
            (
                Request::TlbByAddress {
                    asid: 1,
                    addr: (1 << 39) - 0x1000,
                    pages: 2,
                    leaf: true,
                },
                Refusal::RangeOutOfBounds {
                    addr: (1 << 39) - 0x1000,
                    pages: 2,
                },
            ),
            (
                Request::TlbByAddress {
                    asid: 1,
                    addr: 0x1234,
                    pages: 1,
                    leaf: true,
                },
                Refusal::RangeOutOfBounds {
                    addr: 0x1234,
                    pages: 1,
                },
            ),
            (
                Request::TlbByAddress {
                    asid: 1,
                    addr: 0x1000,
                    pages: 0,
                    leaf: true,
                },
                Refusal::RangeOutOfBounds {
                    addr: 0x1000,
                    pages: 0,
                },
            ),
            (
                Request::TlbByAddress {
                    asid: 1,
                    addr: 0x1000,
                    pages: u64::MAX,
                    leaf: true,
                },
                Refusal::RangeOutOfBounds {
                    addr: 0x1000,
                    pages: u64::MAX,
                },
            ),
        ];
        let v = viommu();
        for (bad, why) in cases {
            let mut hw = Recorder::default();
            assert_eq!(
                v.invalidate(&mut hw, &[good, good, bad, good]),
                Err(ViommuError::Refused(Refused { index: 2, why })),
                "{bad:?}"
            );
            assert!(hw.0.is_empty(), "{bad:?} forwarded {:?}", hw.0);
        }
        // The last page of the input range is fine.
        let mut hw = Recorder::default();
        let last = Request::TlbByAddress {
            asid: 0xff,
            addr: (1 << 39) - 0x1000,
            pages: 1,
            leaf: false,
        };
        assert_eq!(v.invalidate(&mut hw, &[good, last]), Ok(()));
        assert_eq!(hw.0.len(), 1);
        assert_eq!(hw.0[0].len(), 2);
    }

    #[test]
    fn kinds_outside_the_allowed_set_are_refused() {
        let mut v = viommu();
        v.allow_only(&[RequestKind::TlbByAsid, RequestKind::ConfigByVsid]);
        let mut hw = Recorder::default();
        assert_eq!(
            v.invalidate(
                &mut hw,
                &[Request::TlbByAsid { asid: 1 }, Request::ConfigAll]
            ),
            Err(ViommuError::Refused(Refused {
                index: 1,
                why: Refusal::NotAllowed(RequestKind::ConfigAll)
            }))
        );
        assert!(hw.0.is_empty());
        assert_eq!(
            v.invalidate(
                &mut hw,
                &[Request::ConfigByVsid {
                    vsid: 1,
                    ssid: None
                }]
            ),
            Ok(())
        );
        assert_eq!(
            hw.0,
            [[PhysRequest::Config {
                dev: DEV_A,
                ssid: None
            }]]
        );
    }
}
