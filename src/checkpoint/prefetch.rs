//! Prefetch plans: the storages a load will touch, in file order, brought in ahead of the
//! consumer by a thread scoped to one call. A mapped file's ranges are advised
//! (`MADV_WILLNEED`: the kernel reads them into the page cache); a file opened per tensor has
//! its storages read (`pread`) into their deferred copies, exactly the storages the load
//! would read itself, never more. The thread stays at most `budget_bytes` of file ahead of the
//! consumer's cursor (one storage at least, so a budget below one storage still advances).

use super::storage::Storage;
use super::Checkpoint;
use crate::container::Source;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The default window of a prefetch: how far ahead of the consumer it reads.
pub const DEFAULT_PREFETCH_BUDGET: usize = 256 << 20;

/// One storage of a plan: where its bytes are in its file.
struct Step<'c> {
    storage: &'c Storage,
    source: &'c Arc<Source>,
    offset: u64,
    len: u64,
}

impl Step<'_> {
    fn key(&self) -> (usize, u64) {
        (Arc::as_ptr(self.source) as usize, self.offset)
    }
}

/// How far the consumer has got through a plan, shared with the prefetch thread.
pub struct PrefetchCursor {
    /// The plan's steps as (source address, file offset), in plan order (sorted).
    keys: Vec<(usize, u64)>,
    /// `ends[i]`: the bytes of steps `0..i` (so `ends[0] == 0`).
    ends: Vec<u64>,
    /// Steps before this one are consumed (only ever grows).
    reached: AtomicUsize,
    done: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

impl PrefetchCursor {
    fn new(plan: &[Step<'_>]) -> PrefetchCursor {
        let mut ends = Vec::with_capacity(plan.len() + 1);
        ends.push(0u64);
        for step in plan {
            ends.push(ends[ends.len() - 1] + step.len);
        }
        PrefetchCursor {
            keys: plan.iter().map(Step::key).collect(),
            ends,
            reached: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        }
    }

    /// The consumer has used the bytes of `tensor`'s storage: the prefetch may move its window
    /// past them. A storage outside the plan changes nothing.
    pub fn consumed(&self, tensor: &super::Tensor<'_>) {
        let Some((source, offset, _)) = tensor.storage.saved_at() else {
            return;
        };
        if let Ok(step) = self
            .keys
            .binary_search(&(Arc::as_ptr(source) as usize, offset))
        {
            self.reached.fetch_max(step + 1, Ordering::AcqRel);
            let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.1.notify_all();
        }
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_all();
    }

    /// Waits until step `step` fits the window: the steps from the first unconsumed one
    /// through it total at most `budget` bytes, or it is the first unconsumed one (so a
    /// budget below one storage still advances). False when the consumer finished first.
    fn wait_for_room(&self, step: usize, budget: u64) -> bool {
        let mut guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            let reached = self.reached.load(Ordering::Acquire);
            if step <= reached || self.ends[step + 1] - self.ends[reached] <= budget {
                return true;
            }
            guard = self.wake.1.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Checkpoint {
    /// Runs `consume` while a scoped thread brings in, in file order and at most
    /// `budget_bytes` ahead of the cursor `consume` advances ([`PrefetchCursor::consumed`]),
    /// the storages of the entries `indices` (table indices; entries that cannot be
    /// represented and indices out of range are skipped). A mapped file is advised
    /// (`MADV_WILLNEED`), a file opened per tensor has those storages read into memory;
    /// a file read whole has nothing to fetch. The thread ends before this returns; a read
    /// error is left for the consumer's own read of that storage to report.
    pub fn prefetch_while<R>(
        &self,
        indices: &[usize],
        budget_bytes: usize,
        consume: impl FnOnce(&PrefetchCursor) -> R,
    ) -> R {
        let plan = self.prefetch_plan(indices);
        let cursor = PrefetchCursor::new(&plan);
        if plan.is_empty() {
            return consume(&cursor);
        }
        let budget = budget_bytes as u64;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (i, step) in plan.iter().enumerate() {
                    if !cursor.wait_for_room(i, budget) {
                        return;
                    }
                    fetch(step);
                }
            });
            // The cursor is finished even if `consume` panics, so the thread ends.
            struct Finish<'a>(&'a PrefetchCursor);
            impl Drop for Finish<'_> {
                fn drop(&mut self) {
                    self.0.finish();
                }
            }
            let _finish = Finish(&cursor);
            consume(&cursor)
        })
    }

    /// The storages of `indices` that have file bytes still to bring in, each once, in file
    /// order (by source, then offset).
    fn prefetch_plan(&self, indices: &[usize]) -> Vec<Step<'_>> {
        let mut seen = vec![false; self.storages.len()];
        let mut plan = Vec::new();
        for &index in indices {
            let Some(row) = self.table.row(index) else {
                continue;
            };
            let Ok(t) = self.table.tensor(row) else {
                continue;
            };
            let s = self.tensors[t].storage;
            if std::mem::replace(&mut seen[s], true) {
                continue;
            }
            let storage = &self.storages[s];
            let Some((source, offset, _)) = storage.saved_at() else {
                continue;
            };
            let wanted = if source.is_per_tensor() {
                storage.copy_pending()
            } else {
                source.is_mapped()
            };
            if wanted && storage.len() > 0 {
                plan.push(Step {
                    storage,
                    source,
                    offset,
                    len: storage.len() as u64,
                });
            }
        }
        plan.sort_by_key(Step::key);
        plan
    }
}

fn fetch(step: &Step<'_>) {
    if step.source.is_per_tensor() {
        // An error (allocation, I/O) is reported by the consumer's own make_ready, which
        // tries again.
        let _ = step.storage.make_ready();
    } else {
        step.source
            .advise_will_need_range(step.offset as usize, step.len as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::StorageKey;

    #[test]
    fn a_step_fits_when_it_is_next_or_the_window_covers_it() {
        let source = Arc::new(Source::from_bytes(&[0u8; 64]).unwrap());
        let storages: Vec<Storage> = (0..4)
            .map(|i| {
                Storage::in_file(
                    StorageKey::Number(i),
                    "cpu".into(),
                    &source,
                    16 * i as usize,
                    16,
                )
            })
            .collect();
        let plan: Vec<Step<'_>> = storages
            .iter()
            .map(|storage| Step {
                storage,
                source: &source,
                offset: storage.saved_at().unwrap().1,
                len: 16,
            })
            .collect();
        let cursor = PrefetchCursor::new(&plan);
        assert!(cursor.wait_for_room(0, 1), "the next step fits any budget");
        assert!(
            cursor.wait_for_room(1, 32),
            "steps 0 and 1 fill a 32-byte window"
        );
        cursor.reached.store(2, Ordering::Release);
        assert!(
            cursor.wait_for_room(3, 32),
            "steps 2 and 3 once 0 and 1 are consumed"
        );
        cursor.finish();
        assert!(!cursor.wait_for_room(3, 1), "finished: no wait, no fetch");
    }
}
