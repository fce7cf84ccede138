//! The tree as `fdt` walks it, indexed once: each node's path, parent and
//! properties, plus the phandle table. The typed readers below turn
//! properties into values or a `DtError` naming node and property; they
//! never read `fdt`'s own typed helpers (`reg()`, `cell_sizes()`,
//! `chosen()`, `cpus()`, ...), which `expect` or `unwrap` on bad values.
use crate::blob::{be32, MAX_DEPTH};
use crate::error::{DtError, NodeError};
use crate::{Interrupt, IrqKind, Region};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use fdt::node::FdtNode;

pub(crate) struct Node<'a> {
    pub path: String,
    pub parent: Option<usize>,
    pub props: Vec<(&'a str, &'a [u8])>,
}

pub(crate) struct Tree<'a> {
    pub nodes: Vec<Node<'a>>,
    phandles: BTreeMap<u32, usize>,
}

type Res<T> = Result<T, DtError>;

impl<'a> Tree<'a> {
    /// Indexes a blob that `blob::check` accepted.
    pub fn new(blob: &'a [u8]) -> Res<Self> {
        let fdt = fdt::Fdt::new(blob).map_err(|_| DtError::Missing {
            what: "valid header",
        })?;
        let root = fdt
            .find_node("/")
            .ok_or(DtError::Missing { what: "root node" })?;
        let mut tree = Tree {
            nodes: Vec::new(),
            phandles: BTreeMap::new(),
        };
        tree.add(root, None, 0);
        for i in 0..tree.nodes.len() {
            for name in ["phandle", "linux,phandle"] {
                let Some(ph) = tree.u32(i, name)? else {
                    continue;
                };
                if ph == 0 || ph == u32::MAX {
                    return Err(tree.err(i, name, NodeError::BadValue { value: ph.into() }));
                }
                match tree.phandles.insert(ph, i) {
                    Some(j) if j != i => {
                        return Err(tree.err(i, name, NodeError::DuplicatePhandle { phandle: ph }))
                    }
                    _ => {}
                }
            }
        }
        Ok(tree)
    }

    fn add(&mut self, node: FdtNode<'_, 'a>, parent: Option<usize>, depth: usize) {
        let path = match parent {
            None => String::from("/"),
            Some(0) => alloc::format!("/{}", node.name),
            Some(p) => alloc::format!("{}/{}", self.nodes[p].path, node.name),
        };
        let props = node.properties().map(|p| (p.name, p.value)).collect();
        let me = self.nodes.len();
        self.nodes.push(Node {
            path,
            parent,
            props,
        });
        // `blob::check` bounded the depth; this keeps the recursion bounded
        // even if that ever changes.
        if depth < MAX_DEPTH {
            node.children()
                .for_each(|c| self.add(c, Some(me), depth + 1));
        }
    }

    pub fn err(&self, i: usize, prop: &'static str, kind: NodeError) -> DtError {
        DtError::node(&self.nodes[i].path, Some(prop), kind)
    }

    pub fn path(&self, i: usize) -> String {
        self.nodes[i].path.clone()
    }

    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&c| self.nodes[c].parent == Some(i))
    }

    pub fn name(&self, i: usize) -> &str {
        let p = &self.nodes[i].path;
        &p[p.rfind('/').map_or(0, |s| s + 1)..]
    }

    pub fn prop(&self, i: usize, name: &str) -> Option<&'a [u8]> {
        self.nodes[i]
            .props
            .iter()
            .find(|p| p.0 == name)
            .map(|p| p.1)
    }

    pub fn has(&self, i: usize, name: &str) -> bool {
        self.prop(i, name).is_some()
    }

    /// Byte-wise, so a malformed `compatible` elsewhere cannot fail a search.
    pub fn compatible(&self, i: usize, any: &[&str]) -> bool {
        self.prop(i, "compatible").is_some_and(|v| {
            v.split(|&b| b == 0)
                .any(|s| any.iter().any(|c| c.as_bytes() == s))
        })
    }

    /// `status` absent, "okay" or "ok".
    pub fn enabled(&self, i: usize) -> bool {
        match self.prop(i, "status") {
            None => true,
            Some(v) => matches!(v, b"okay\0" | b"ok\0"),
        }
    }

    pub fn find_all(&self, compat: &'static [&'static str]) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&i| self.enabled(i) && self.compatible(i, compat))
    }

    pub fn by_path(&self, path: &str) -> Option<usize> {
        // A query component without '@' matches a node name's part before it.
        let same =
            |q: &str, n: &str| q == n || (!q.contains('@') && n.split('@').next() == Some(q));
        self.nodes.iter().position(|n| {
            let (mut a, mut b) = (path.split('/'), n.path.split('/'));
            n.path == path
                || loop {
                    match (a.next(), b.next()) {
                        (None, None) => break true,
                        (Some(q), Some(m)) if same(q, m) => {}
                        _ => break false,
                    }
                }
        })
    }

    pub fn by_phandle(&self, i: usize, prop: &'static str, ph: u32) -> Res<usize> {
        let kind = NodeError::DanglingPhandle { phandle: ph };
        self.phandles
            .get(&ph)
            .copied()
            .ok_or_else(|| self.err(i, prop, kind))
    }

    pub fn phandle(&self, i: usize) -> Option<u32> {
        self.phandles.iter().find(|p| *p.1 == i).map(|p| *p.0)
    }

    /// The value as big-endian cells; the length must be a multiple of 4.
    pub fn cells(&self, i: usize, name: &'static str) -> Res<Option<Vec<u32>>> {
        let Some(v) = self.prop(i, name) else {
            return Ok(None);
        };
        if v.len() % 4 != 0 {
            return Err(self.err(
                i,
                name,
                NodeError::BadLength {
                    len: v.len(),
                    unit: 4,
                },
            ));
        }
        Ok(Some(
            (0..v.len() / 4).filter_map(|c| be32(v, c * 4)).collect(),
        ))
    }

    /// A one-cell property.
    pub fn u32(&self, i: usize, name: &'static str) -> Res<Option<u32>> {
        match self.prop(i, name) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(be32(v, 0)),
            Some(v) => Err(self.err(
                i,
                name,
                NodeError::BadLength {
                    len: v.len(),
                    unit: 4,
                },
            )),
        }
    }

    /// A string list: NUL-terminated UTF-8 strings.
    pub fn strings(&self, i: usize, name: &'static str) -> Res<Option<Vec<String>>> {
        let Some(v) = self.prop(i, name) else {
            return Ok(None);
        };
        let bad = || self.err(i, name, NodeError::BadString);
        let body = v.strip_suffix(&[0]).ok_or_else(bad)?;
        let s = core::str::from_utf8(body).map_err(|_| bad())?;
        Ok(Some(s.split('\0').map(String::from).collect()))
    }

    pub fn string(&self, i: usize, name: &'static str) -> Res<Option<String>> {
        Ok(self.strings(i, name)?.and_then(|v| v.into_iter().next()))
    }

    /// `#address-cells` / `#size-cells` that node `i` gives its children.
    fn cell_count(&self, i: usize, name: &'static str, default: u32, ok: &[u32]) -> Res<usize> {
        let n = self.u32(i, name)?.unwrap_or(default);
        if !ok.contains(&n) {
            return Err(self.err(i, name, NodeError::BadCells { cells: n }));
        }
        Ok(n as usize)
    }

    pub fn address_cells(&self, i: usize, ok: &[u32]) -> Res<usize> {
        self.cell_count(i, "#address-cells", 2, ok)
    }

    pub fn size_cells(&self, i: usize, ok: &[u32]) -> Res<usize> {
        self.cell_count(i, "#size-cells", 1, ok)
    }

    /// Splits a cell list into entries of `unit` cells; the list must be a
    /// whole, non-empty number of entries.
    pub fn entries(
        &self,
        i: usize,
        name: &'static str,
        cells: &[u32],
        unit: usize,
    ) -> Res<Vec<Vec<u32>>> {
        if cells.is_empty() || !cells.len().is_multiple_of(unit) {
            let kind = NodeError::BadLength {
                len: cells.len() * 4,
                unit: unit * 4,
            };
            return Err(self.err(i, name, kind));
        }
        Ok(cells.chunks(unit).map(<[u32]>::to_vec).collect())
    }

    /// `reg` as CPU-physical regions, through every parent bus's `ranges`.
    pub fn reg(&self, i: usize) -> Res<Vec<Region>> {
        let p = self.nodes[i].parent.unwrap_or(0);
        let (ac, sc) = (
            self.address_cells(p, &[1, 2])?,
            self.size_cells(p, &[1, 2])?,
        );
        let cells = self.cells(i, "reg")?;
        let cells = cells.ok_or_else(|| self.err(i, "reg", NodeError::MissingProperty))?;
        let mut out = Vec::new();
        for e in self.entries(i, "reg", &cells, ac + sc)? {
            let (addr, size) = (join(&e[..ac]), join(&e[ac..]));
            let base = self.translate(i, "reg", addr)?;
            if base.checked_add(size).is_none() {
                return Err(self.err(i, "reg", NodeError::Overflow { base, size }));
            }
            out.push(Region { base, size });
        }
        Ok(out)
    }

    /// `reg` with at least `need` entries.
    pub fn reg_min(&self, i: usize, need: usize) -> Res<Vec<Region>> {
        let r = self.reg(i)?;
        if r.len() < need {
            let kind = NodeError::TooFewEntries {
                need,
                have: r.len(),
            };
            return Err(self.err(i, "reg", kind));
        }
        Ok(r)
    }

    /// Maps `addr`, in the address space of node `i`'s parent bus, up to the
    /// root. An empty `ranges` is the identity; a bus without `ranges` is
    /// not memory-mapped.
    pub fn translate(&self, i: usize, prop: &'static str, mut addr: u64) -> Res<u64> {
        let untranslatable = |a| self.err(i, prop, NodeError::Untranslatable { address: a });
        let mut bus = self.nodes[i].parent;
        while let Some(b) = bus.filter(|&b| b != 0) {
            let up = self.nodes[b].parent.unwrap_or(0);
            let ranges = self
                .cells(b, "ranges")?
                .ok_or_else(|| untranslatable(addr))?;
            if !ranges.is_empty() {
                let ca = self.address_cells(b, &[1, 2])?;
                let pa = self.address_cells(up, &[1, 2])?;
                let sc = self.size_cells(b, &[1, 2])?;
                let hit = self
                    .entries(b, "ranges", &ranges, ca + pa + sc)?
                    .into_iter()
                    .find_map(|e| {
                        let (child, parent, size) =
                            (join(&e[..ca]), join(&e[ca..ca + pa]), join(&e[ca + pa..]));
                        let off = addr.checked_sub(child).filter(|&o| o < size)?;
                        parent.checked_add(off)
                    });
                addr = hit.ok_or_else(|| untranslatable(addr))?;
            }
            bus = Some(up);
        }
        Ok(addr)
    }

    /// `interrupts` as GIC specifiers. The interrupt parent is found as
    /// Linux does: `interrupt-parent` if present, else the tree parent,
    /// until a node with `#interrupt-cells`; that must be 3 (the GIC binding).
    pub fn interrupts(&self, i: usize) -> Res<Option<Vec<Interrupt>>> {
        let Some(cells) = self.cells(i, "interrupts")? else {
            return Ok(None);
        };
        let no_parent = || self.err(i, "interrupts", NodeError::NoInterruptParent);
        // Bounded: a loop of interrupt-parent phandles must not spin.
        let (mut at, mut ctrl) = (i, None);
        for _ in 0..self.nodes.len() {
            let next = match self.u32(at, "interrupt-parent")? {
                Some(ph) => self.by_phandle(at, "interrupt-parent", ph)?,
                None => self.nodes[at].parent.ok_or_else(no_parent)?,
            };
            if self.has(next, "#interrupt-cells") {
                ctrl = Some(next);
                break;
            }
            at = next;
        }
        let ctrl = ctrl.ok_or_else(no_parent)?;
        self.cell_count(ctrl, "#interrupt-cells", 3, &[3])?;
        let mut out = Vec::new();
        for e in self.entries(i, "interrupts", &cells, 3)? {
            let kind = match e[0] {
                0 if e[1] < 988 => IrqKind::Spi,
                1 if e[1] < 16 => IrqKind::Ppi,
                2 if e[1] < 1024 => IrqKind::ExtendedSpi,
                3 if e[1] < 64 => IrqKind::ExtendedPpi,
                _ => {
                    let value = (u64::from(e[0]) << 32) | u64::from(e[1]);
                    return Err(self.err(i, "interrupts", NodeError::BadValue { value }));
                }
            };
            out.push(Interrupt {
                kind,
                number: e[1],
                flags: e[2],
            });
        }
        Ok(Some(out))
    }
}

/// One or two cells as a number.
pub(crate) fn join(cells: &[u32]) -> u64 {
    cells.iter().fold(0, |acc, &c| (acc << 32) | u64::from(c))
}
