//! Test helpers: the QEMU fixtures, and a small editable tree that reads a
//! real blob (through `fdt`) and writes it back, so tests can corrupt one
//! node or property of a real QEMU tree at a time.
#![allow(dead_code)]

pub fn fixture(name: &str) -> &'static [u8] {
    match name {
        "virt-smmuv3" => include_bytes!("../../fixtures/virt-smmuv3.dtb"),
        "virt-smmuv3-bootargs" => include_bytes!("../../fixtures/virt-smmuv3-bootargs.dtb"),
        "virt-pxb" => include_bytes!("../../fixtures/virt-pxb.dtb"),
        "virt-gicv2" => include_bytes!("../../fixtures/virt-gicv2.dtb"),
        _ => panic!("no fixture {name}"),
    }
}

pub fn cells(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|c| c.to_be_bytes()).collect()
}

pub fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[derive(Clone, Debug)]
pub struct TNode {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<TNode>,
}

impl TNode {
    pub fn from_blob(blob: &[u8]) -> TNode {
        fn walk(n: fdt::node::FdtNode<'_, '_>, name: &str) -> TNode {
            TNode {
                name: name.into(),
                props: n
                    .properties()
                    .map(|p| (p.name.into(), p.value.to_vec()))
                    .collect(),
                children: n.children().map(|c| walk(c, c.name)).collect(),
            }
        }
        let fdt = fdt::Fdt::new(blob).unwrap();
        walk(fdt.find_node("/").unwrap(), "")
    }

    pub fn fixture(name: &str) -> TNode {
        TNode::from_blob(fixture(name))
    }

    /// The node at `path` ("/" is the root); panics if absent.
    pub fn node(&mut self, path: &str) -> &mut TNode {
        let mut n = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n
                .children
                .iter_mut()
                .find(|c| c.name == part)
                .unwrap_or_else(|| panic!("{part}"));
        }
        n
    }

    pub fn set(&mut self, name: &str, value: Vec<u8>) -> &mut TNode {
        match self.props.iter_mut().find(|p| p.0 == name) {
            Some(p) => p.1 = value,
            None => self.props.push((name.into(), value)),
        }
        self
    }

    pub fn remove(&mut self, name: &str) -> &mut TNode {
        self.props.retain(|p| p.0 != name);
        self
    }

    pub fn remove_child(&mut self, name: &str) -> &mut TNode {
        self.children.retain(|c| c.name != name);
        self
    }

    pub fn child(&mut self, node: TNode) -> &mut TNode {
        self.children.push(node);
        self
    }

    pub fn new(name: &str) -> TNode {
        TNode {
            name: name.into(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A packed v17 blob, with a NOP token before every property and node
    /// end of the nodes named `nops_in` ("*": all). NOPs are legal, and
    /// what `fdt` 0.1.5 mis-walks.
    pub fn to_blob_with(&self, nops_in: Option<&str>) -> Vec<u8> {
        self.build(nops_in, &[])
    }

    /// A packed blob whose memory reservation block (`/memreserve/`)
    /// lists `reserve` as (address, size).
    pub fn to_blob_reserving(&self, reserve: &[(u64, u64)]) -> Vec<u8> {
        self.build(None, reserve)
    }

    fn build(&self, nops_in: Option<&str>, reserve: &[(u64, u64)]) -> Vec<u8> {
        fn emit(n: &TNode, nops_in: Option<&str>, s: &mut Vec<u8>, strings: &mut Vec<u8>) {
            let nops = nops_in.is_some_and(|w| w == "*" || w == n.name);
            let word = |s: &mut Vec<u8>, w: u32| s.extend_from_slice(&w.to_be_bytes());
            let pad = |s: &mut Vec<u8>| s.resize(s.len().next_multiple_of(4), 0);
            word(s, 1);
            s.extend_from_slice(n.name.as_bytes());
            s.push(0);
            pad(s);
            for (name, value) in &n.props {
                if nops {
                    word(s, 4);
                }
                let mut key = name.as_bytes().to_vec();
                key.push(0);
                let off = strings
                    .windows(key.len())
                    .position(|w| w == key)
                    .unwrap_or_else(|| {
                        strings.extend_from_slice(&key);
                        strings.len() - key.len()
                    });
                word(s, 3);
                word(s, value.len() as u32);
                word(s, off as u32);
                s.extend_from_slice(value);
                pad(s);
            }
            for c in &n.children {
                emit(c, nops_in, s, strings);
            }
            if nops {
                word(s, 4);
            }
            word(s, 2);
        }
        let (mut s, mut strings) = (Vec::new(), Vec::new());
        emit(self, nops_in, &mut s, &mut strings);
        s.extend_from_slice(&9u32.to_be_bytes());
        let rsv = 16 * (reserve.len() + 1);
        let (off_struct, off_strings) = (40 + rsv, 40 + rsv + s.len());
        let total = off_strings + strings.len();
        let header = [
            0xd00d_feed,
            total,
            off_struct,
            off_strings,
            40,
            17,
            16,
            0,
            strings.len(),
            s.len(),
        ];
        let mut out: Vec<u8> = header
            .iter()
            .flat_map(|&w| (w as u32).to_be_bytes())
            .collect();
        for &(a, n) in reserve {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&s);
        out.extend_from_slice(&strings);
        out
    }

    pub fn to_blob(&self) -> Vec<u8> {
        self.to_blob_with(None)
    }
}

/// Overwrites the big-endian word at `at`.
pub fn poke(blob: &mut [u8], at: usize, v: u32) {
    blob[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn peek(blob: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(blob[at..at + 4].try_into().unwrap())
}

/// The offset of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in blob")
}
