//! Updating a live translation entry (an SMMUv3 STE or CD, a VT-d PASID
//! entry) that the IOMMU may fetch at any moment, one 64-bit word at a
//! time: no fetch may ever see half of the old configuration and half of
//! the new.
//!
//! The hardware reads each word single-copy atomically, but the words of
//! one fetch at different times; only an invalidation that completed (a
//! "sync": CFGI + CMD_SYNC, or a PASID-cache invalidation and its wait)
//! ends the fetches that began before it. So between two syncs a fetch
//! may combine any value each word held in that time. [`write_entry`]
//! orders the stores so that every such combination is the old entry, the
//! new one, or one that is not valid:
//!
//! - words whose bits the current configuration does not use are set to
//!   the target first (the hardware ignores them);
//! - if then only one word still differs in bits the hardware uses, that
//!   word is written alone (a hitless switch);
//! - otherwise the entry is made invalid, synced, the other words written
//!   and synced, and the valid word written last (break before make).
//!
//! Each entry format says which bits its configuration uses
//! ([`EntryFormat::used`]); [`check`] replays a recorded update against
//! that and reports the first state a fetch could have seen torn.

/// An entry the hardware reads as `N` 64-bit words.
pub trait EntryFormat<const N: usize> {
    /// The word and bit that make the entry valid.
    const VALID: (usize, u64);
    /// The bits of `entry` the hardware reads, given the configuration
    /// `entry` itself selects (an invalid entry uses only its valid bit).
    fn used(entry: &[u64; N]) -> [u64; N];

    fn valid(entry: &[u64; N]) -> bool {
        entry[Self::VALID.0] & Self::VALID.1 != 0
    }
}

/// Where the entry lives and how the hardware is told.
pub trait EntryTarget<const N: usize> {
    type Error;
    /// One 64-bit store to word `word` of the entry.
    fn write(&mut self, word: usize, value: u64) -> Result<(), Self::Error>;
    /// Makes every store so far visible to the hardware, invalidates its
    /// cached copies of the entry, and waits for that to complete.
    fn sync(&mut self) -> Result<(), Self::Error>;
    /// Stores from `true` to `false` go to an entry made invalid and
    /// synced: no cache holds them (the checking mode is told).
    fn uncached(&mut self, _on: bool) {}
}

/// Writes the words of `to` that differ from `now`; syncs when one did.
/// Returns the entry as memory holds it afterwards.
fn store<const N: usize, T: EntryTarget<N>>(
    t: &mut T,
    now: [u64; N],
    to: &[u64; N],
    words: impl Iterator<Item = usize>,
) -> Result<[u64; N], T::Error> {
    let out = store_unsynced(t, now, to, words)?;
    if out != now {
        t.sync()?;
    }
    Ok(out)
}

/// As [`store`], without the sync.
fn store_unsynced<const N: usize, T: EntryTarget<N>>(
    t: &mut T,
    now: [u64; N],
    to: &[u64; N],
    words: impl Iterator<Item = usize>,
) -> Result<[u64; N], T::Error> {
    let mut out = now;
    for i in words {
        if out[i] != to[i] {
            t.write(i, to[i])?;
            out[i] = to[i];
        }
    }
    Ok(out)
}

/// Changes the entry from `current` (what memory holds) to `target`, in
/// the order described in the module documentation.
pub fn write_entry<const N: usize, F: EntryFormat<N>, T: EntryTarget<N>>(
    t: &mut T,
    current: [u64; N],
    target: &[u64; N],
) -> Result<(), T::Error> {
    let (vw, vbit) = F::VALID;
    let all = || 0..N;
    if !F::valid(target) {
        // Invalid first: from then on nothing the hardware fetches is
        // used, so the rest needs no sync of its own.
        let mut first = current;
        first[vw] = target[vw];
        let now = store(t, current, &first, core::iter::once(vw))?;
        t.uncached(true);
        let r = store_unsynced(t, now, target, all());
        t.uncached(false);
        r?;
        return Ok(());
    }
    let used = F::used(&current);
    // The current entry with every bit its configuration ignores already
    // as in the target.
    let mut step = current;
    let mut differing = 0usize;
    let mut critical = 0;
    for i in 0..N {
        step[i] = (current[i] & used[i]) | (target[i] & !used[i]);
        if (step[i] ^ target[i]) & used[i] != 0 {
            differing += 1;
            critical = i;
        }
    }
    if differing <= 1 {
        let now = store(t, current, &step, all())?;
        let now = store(t, now, target, core::iter::once(critical))?;
        store(t, now, target, all())?;
    } else {
        let mut off = current;
        off[vw] &= !vbit;
        let now = store(t, current, &off, core::iter::once(vw))?;
        let now = store(t, now, target, all().filter(|&i| i != vw))?;
        store(t, now, target, core::iter::once(vw))?;
    }
    Ok(())
}

/// Replaying a recorded update against what the hardware could fetch.
pub mod check {
    use super::{EntryFormat, EntryTarget};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::convert::Infallible;

    /// One thing a driver did to the entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Step {
        Write { word: usize, value: u64 },
        Sync,
    }

    /// An [`EntryTarget`] that keeps the entry and the steps.
    #[derive(Debug, Clone)]
    pub struct Recorder<const N: usize> {
        pub entry: [u64; N],
        pub steps: Vec<Step>,
    }

    impl<const N: usize> Recorder<N> {
        pub fn new(entry: [u64; N]) -> Self {
            Recorder {
                entry,
                steps: Vec::new(),
            }
        }
    }

    impl<const N: usize> EntryTarget<N> for Recorder<N> {
        type Error = Infallible;
        fn write(&mut self, word: usize, value: u64) -> Result<(), Infallible> {
            self.entry[word] = value;
            self.steps.push(Step::Write { word, value });
            Ok(())
        }
        fn sync(&mut self) -> Result<(), Infallible> {
            self.steps.push(Step::Sync);
            Ok(())
        }
    }

    /// Why a recorded update is wrong.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Torn<const N: usize> {
        /// Between syncs `after_step`-1 and the next, a fetch could have
        /// seen `seen`: neither entry, and valid.
        Mixed { after_step: usize, seen: [u64; N] },
        /// Stores that change what the hardware uses were not followed
        /// by a sync: it may keep the old entry.
        NoFinalSync,
        /// The entry ended as something else than the target.
        WrongResult { got: [u64; N] },
    }

    fn same_config<F: EntryFormat<N>, const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
        let (ua, ub) = (F::used(a), F::used(b));
        ua == ub && (0..N).all(|i| a[i] & ua[i] == b[i] & ub[i])
    }

    /// Whether every state a fetch could see within one window (each word
    /// any of the values it held) is `old`, `new`, or invalid.
    fn window_ok<F: EntryFormat<N>, const N: usize>(
        values: &[Vec<u64>; N],
        old: &[u64; N],
        new: &[u64; N],
    ) -> Result<(), [u64; N]> {
        let mut idx = [0usize; N];
        loop {
            let seen: [u64; N] = core::array::from_fn(|i| values[i][idx[i]]);
            if F::valid(&seen)
                && !same_config::<F, N>(&seen, old)
                && !same_config::<F, N>(&seen, new)
            {
                return Err(seen);
            }
            // Next combination (odometer order).
            let mut i = 0;
            loop {
                if i == N {
                    return Ok(());
                }
                idx[i] += 1;
                if idx[i] < values[i].len() {
                    break;
                }
                idx[i] = 0;
                i += 1;
            }
        }
    }

    /// Checks `steps`, applied to `old`, against the hardware's view.
    pub fn check<F: EntryFormat<N>, const N: usize>(
        old: &[u64; N],
        new: &[u64; N],
        steps: &[Step],
    ) -> Result<(), Torn<N>> {
        let mut entry = *old;
        let mut values: [Vec<u64>; N] = core::array::from_fn(|i| vec![old[i]]);
        let mut at_sync = *old;
        for (n, step) in steps.iter().enumerate() {
            match *step {
                Step::Write { word, value } => {
                    entry[word] = value;
                    if !values[word].contains(&value) {
                        values[word].push(value);
                    }
                }
                Step::Sync => {
                    window_ok::<F, N>(&values, old, new).map_err(|seen| Torn::Mixed {
                        after_step: n,
                        seen,
                    })?;
                    values = core::array::from_fn(|i| vec![entry[i]]);
                    at_sync = entry;
                }
            }
        }
        // Stores after the last sync are fetchable too, and may change
        // only what nobody uses (the other words of an invalid entry).
        window_ok::<F, N>(&values, old, new).map_err(|seen| Torn::Mixed {
            after_step: steps.len(),
            seen,
        })?;
        let unused_only = if F::valid(&entry) {
            F::valid(&at_sync) && same_config::<F, N>(&entry, &at_sync)
        } else {
            !F::valid(&at_sync)
        };
        if !unused_only {
            return Err(Torn::NoFinalSync);
        }
        if entry != *new {
            return Err(Torn::WrongResult { got: entry });
        }
        Ok(())
    }

    /// Runs [`super::write_entry`] from `old` to `new` on a recorder and
    /// checks it; returns the steps (for counting syncs).
    pub fn writer_is_safe<F: EntryFormat<N>, const N: usize>(
        old: [u64; N],
        new: [u64; N],
    ) -> Result<Vec<Step>, Torn<N>> {
        let mut r = Recorder::new(old);
        match super::write_entry::<N, F, _>(&mut r, old, &new) {
            Ok(()) => {}
            Err(e) => match e {},
        }
        check::<F, N>(&old, &new, &r.steps)?;
        Ok(r.steps)
    }

    /// How many syncs `steps` holds.
    pub fn syncs(steps: &[Step]) -> usize {
        steps.iter().filter(|s| **s == Step::Sync).count()
    }
}

#[cfg(test)]
mod tests {
    use super::check::{check, syncs, writer_is_safe, Step, Torn};
    use super::EntryFormat;

    /// A toy format: word 0 bit 0 valid, bits 1..8 a mode; mode 1 uses
    /// word 1, mode 2 uses words 1 and 2.
    struct Toy;
    impl EntryFormat<3> for Toy {
        const VALID: (usize, u64) = (0, 1);
        fn used(e: &[u64; 3]) -> [u64; 3] {
            if e[0] & 1 == 0 {
                return [1, 0, 0];
            }
            match (e[0] >> 1) & 0x7f {
                1 => [0xff, !0, 0],
                2 => [0xff, !0, !0],
                _ => [0xff, 0, 0],
            }
        }
    }

    #[test]
    fn one_used_word_changes_without_invalidating() {
        let steps = writer_is_safe::<Toy, 3>([3, 10, 0], [3, 11, 0]).unwrap();
        assert_eq!(steps, [Step::Write { word: 1, value: 11 }, Step::Sync]);
        // Mode 1 to mode 2: word 2 is unused by mode 1, so it goes first,
        // then word 0 alone.
        let steps = writer_is_safe::<Toy, 3>([3, 10, 0], [5, 10, 7]).unwrap();
        assert_eq!(syncs(&steps), 2);
        assert!(!steps.contains(&Step::Write { word: 0, value: 2 }));
    }

    #[test]
    fn two_used_words_break_before_make() {
        let steps = writer_is_safe::<Toy, 3>([5, 10, 20], [5, 11, 21]).unwrap();
        assert_eq!(steps[0], Step::Write { word: 0, value: 4 });
        assert_eq!(syncs(&steps), 3);
    }

    #[test]
    fn to_and_from_invalid() {
        writer_is_safe::<Toy, 3>([0, 0, 0], [5, 11, 21]).unwrap();
        let steps = writer_is_safe::<Toy, 3>([5, 10, 20], [0, 0, 0]).unwrap();
        assert_eq!(steps[0], Step::Write { word: 0, value: 0 });
    }

    #[test]
    fn a_torn_update_is_caught() {
        // Both used words written with one sync after: a fetch may see
        // the new word 1 with the old word 2.
        let steps = [
            Step::Write { word: 1, value: 11 },
            Step::Write { word: 2, value: 21 },
            Step::Sync,
        ];
        assert!(matches!(
            check::<Toy, 3>(&[5, 10, 20], &[5, 11, 21], &steps),
            Err(Torn::Mixed { .. })
        ));
        // Invalid first but no sync before the rest: a fetch that read
        // word 1 early and word 0 late sees old 1 with new 0.
        let steps = [
            Step::Write { word: 0, value: 4 },
            Step::Sync,
            Step::Write { word: 1, value: 11 },
            Step::Write { word: 2, value: 21 },
            Step::Write { word: 0, value: 5 },
            Step::Sync,
        ];
        assert!(matches!(
            check::<Toy, 3>(&[5, 10, 20], &[5, 11, 21], &steps),
            Err(Torn::Mixed { .. })
        ));
        let steps = [Step::Write { word: 1, value: 11 }];
        assert_eq!(
            check::<Toy, 3>(&[3, 10, 0], &[3, 11, 0], &steps),
            Err(Torn::NoFinalSync)
        );
    }
}
