//! `load_state_dict` for meta modules: key matching (prefix, strictness, non-persistent
//! buffers), shape checks, then assign (views into the checkpoint), assign + convert, or copy
//! (with dtype conversion) into owned or bound storage, with a per-tensor callback in file order.
//!
//! All or nothing. A load is planned completely before anything changes: keys, shapes, dtypes,
//! conversions and the state of every destination are checked first, so a load that fails for
//! any of those reasons has not touched the module. The only failures left after planning are a
//! callback asking to stop and running out of memory while converting. For those, a strict load
//! undoes what it did:
//! - assign loads swap each entry's data and keep the old value, so undoing swaps them back;
//! - copy loads write into existing storage, so — only when a callback is given to a strict
//!   load, the one case where a stop can happen mid-way — the bytes an entry held are saved
//!   just before it is overwritten and written back on a stop. This costs one extra copy of
//!   what was loaded before the stop, and nothing when there is no callback.
//!
//! A non-strict load that is stopped keeps the entries loaded before the stop.

use super::convert;
use super::report::{size_mismatch, torch_size, LoadReport};
use super::tensor_parallel::{Share, TensorParallel};
use super::{Data, Entry, Module, View};
use crate::checkpoint::{new_storage_id, Backing, Slice};
use crate::checkpoint::{Checkpoint, PrefetchCursor, TensorRef};
use crate::container::AlignedBuf;
use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;

/// How to load (the C `mmckpt_load_options` and the CLI's switches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Bind views into the checkpoint instead of copying (torch's `assign=True`): the
    /// checkpoint's dtype and strides win, no tensor byte is read.
    pub assign: bool,
    /// Missing or unexpected keys fail the load (torch's `strict=True`, the default).
    pub strict: bool,
    /// With `assign`: keep the module's declared dtypes, converting where the checkpoint's
    /// differs (into owned storage); matching dtypes stay zero-copy.
    pub convert: bool,
    /// Every loaded entry is row-major contiguous. With `assign`, an entry whose checkpoint
    /// tensor is already row-major stays a zero-copy view, and one that is strided (a
    /// transposed or permuted weight, an `as_strided` view) is copied into module-owned
    /// row-major memory in the checkpoint's dtype (or, with `convert`, the declared one);
    /// [`LoadReport::copied_keys`] names the copies. Copy loads always write row-major
    /// memory, so for them this changes nothing.
    pub contiguous: bool,
    /// Only checkpoint keys under this prefix are considered, and it is stripped. A prefix that
    /// does not end in `.` gets one (`module` and `module.` are the same).
    pub prefix: String,
    /// Bring the loaded entries' storages in ahead of the copy, in file order and at most
    /// [`DEFAULT_PREFETCH_BUDGET`](crate::DEFAULT_PREFETCH_BUDGET) bytes ahead of it (see
    /// [`Checkpoint::prefetch_while`]): a cold load streams the file. Results are the same;
    /// an assign load without `convert` or `contiguous` reads no tensor byte, so nothing is
    /// fetched for it. With [`LoadOptions::tensor_parallel`], only the replicated entries
    /// are prefetched: a split entry's share is read where the load touches it.
    pub prefetch: bool,
    /// Load one rank's share of a tensor-parallel model: the entries its rules split receive
    /// `torch.chunk(t, world, dim)[rank]` of the checkpoint tensor `t` (declare them with
    /// that, the local, shape), the others are loaded whole. An assign load binds the share
    /// as a view (a split along a dimension other than the first is a strided view; with
    /// `contiguous` it is copied, only its bytes); a copy load copies only the share's bytes.
    /// `None` (the default) loads every entry whole. See [`TensorParallel`].
    pub tensor_parallel: Option<TensorParallel>,
    /// A copy load reads each entry's bytes from the file straight into new module-owned
    /// memory, bypassing the page cache (`O_DIRECT`), in pieces of 8 MiB shared by up to twice
    /// as many threads as a large copy uses (at most twice the cores, and 8), instead of copying them out of the mapping: a cold file is read at the device's speed, and
    /// its pages are not left in the page cache. The results are the same bytes.
    ///
    /// It applies to an entry whose storage is module-owned (materialized; the new buffer
    /// replaces it, so pointers to the old one are stale, as after any load that changes
    /// the entry), of at least 64 KiB, whose checkpoint tensor has the
    /// declared dtype, is row-major contiguous, starts on a 64-byte boundary of a file
    /// opened with a shared mapping ([`OpenMode::Map`](crate::OpenMode::Map),
    /// [`OpenMode::MapPopulate`](crate::OpenMode::MapPopulate); the default) and is loaded
    /// whole. Every other entry is copied as without the option, silently: smaller
    /// ones, conversions, strided views, tensor-parallel shares, memory bound by the caller
    /// (`bind`), storages mmckpt copies (misaligned, big-endian, deflated, assembled from
    /// chunks), checkpoints read into memory, given as bytes or mapped copy-on-write, and
    /// files deleted or replaced since they were opened. A file system that refuses `O_DIRECT` (tmpfs) is read
    /// with plain `pread` into the new memory instead. With
    /// [`prefetch`](LoadOptions::prefetch), only the entries copied as usual are prefetched.
    ///
    /// All the direct reads are done before the module changes: a read that fails or finds
    /// the file shorter (truncated since it was opened) is an `Io` error naming the entry
    /// and the byte, and the module is as it was. Memory: the new buffers, and the entries'
    /// old buffers until the load ends (untouched after a `materialize`, they hold no pages).
    /// An assign load reads nothing this way.
    pub direct_reads: bool,
}

/// Entries smaller than this are copied from the mapping even with
/// [`LoadOptions::direct_reads`]: its read-ahead fetches a run of small tensors with fewer
/// requests than a direct read each.
pub(crate) const DIRECT_READ_MIN_BYTES: usize = 64 << 10;

/// How many pieces ahead of the direct reads their fresh memory is populated.
const DIRECT_POPULATE_AHEAD: usize = 6;

/// Pieces direct reads are split into (whole blocks): large requests for the device, small
/// enough to share one tensor's reads among the threads.
const DIRECT_PIECE_BYTES: usize = 8 << 20;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            assign: false,
            strict: true,
            convert: false,
            contiguous: false,
            prefix: String::new(),
            prefetch: false,
            tensor_parallel: None,
            direct_reads: false,
        }
    }
}

impl LoadOptions {
    /// Refuses combinations that mean nothing, so that no front end (C, CLI, Rust) can run
    /// one silently: `convert` only changes an assign load, as copy loads always convert;
    /// and tensor-parallel options that [`TensorParallel::validate`] refuses.
    pub fn validate(&self) -> Result<()> {
        if let Some(tp) = &self.tensor_parallel {
            tp.validate()?;
        }
        if self.convert && !self.assign {
            return Err(Error::invalid_argument(
                "MMCKPT_LOAD_CONVERT needs MMCKPT_LOAD_ASSIGN (LoadOptions::convert needs \
                 assign; copy loads always convert)",
            ));
        }
        Ok(())
    }
}

/// The per-tensor callback: `false` stops the load with `Callback`.
///
/// Re-entrancy: the callback cannot reach the module being loaded (`load_with` borrows it
/// mutably and passes only the entry); the C API, whose callbacks hold the module's handle,
/// refuses such calls itself (see `ffi::module`).
pub type OnTensor<'a> = &'a mut dyn FnMut(&Entry) -> bool;

const NONE: usize = usize::MAX;

/// What a planned step loads: a checkpoint tensor, or a rank's share of one.
enum Source<'c> {
    Whole(TensorRef<'c>),
    /// Boxed: a plan holds a step per entry, and a slice is several times a tensor's size.
    Share(Box<Slice>),
}

impl Source<'_> {
    fn tensor(&self) -> TensorRef<'_> {
        match self {
            Source::Whole(t) => *t,
            Source::Share(slice) => slice.tensor(),
        }
    }

    /// Before a share of a mapped file is read: asks the kernel to read the bytes it spans
    /// (`MADV_WILLNEED`). The faults of the copy then find their pages cached and start no
    /// read-around of their own, which would read up to the device's read-ahead window
    /// (megabytes) of the neighbouring ranks' shares around every run. The advice goes in
    /// pieces (`Source::advise_will_need_range`): the kernel reads at most one read-ahead window
    /// per call (`force_page_cache_ra`) and silently drops the rest of a longer range. Nothing for
    /// whole tensors, which keep the kernel's sequential read-ahead (and the `prefetch`
    /// option).
    fn advise_share(&self) {
        let Source::Share(slice) = self else {
            return;
        };
        let t = slice.tensor();
        if let Backing::File(source) = t.storage.backing() {
            if t.storage.is_mapped() && t.desc.numel > 0 {
                let start = t.storage.start() + t.desc.byte_offset() as usize;
                let end = start + t.desc.span_bytes() as usize;
                source.advise_will_need_range(start, end - start);
            }
        }
    }
}

/// A planned load step: (entry index, checkpoint table index, what it loads).
type Pair<'c> = (usize, usize, Source<'c>);

impl Module {
    /// Loads `ckpt` into this module. See [`LoadOptions`]; the returned report (or, on a key or
    /// size mismatch, the error message) is worded as torch words it. Options that
    /// [`LoadOptions::validate`] refuses fail with InvalidArgument before anything is read.
    pub fn load(&mut self, ckpt: &Checkpoint, options: &LoadOptions) -> Result<LoadReport> {
        self.load_with(ckpt, options, None)
    }

    /// [`Module::load`] with a callback that is called once per loaded entry, after it is bound
    /// or copied, in file-offset order (non-file-backed tensors last, in table order).
    pub fn load_with(
        &mut self,
        ckpt: &Checkpoint,
        options: &LoadOptions,
        on_tensor: Option<OnTensor<'_>>,
    ) -> Result<LoadReport> {
        options.validate()?;
        let reads = !options.assign || options.convert || options.contiguous;
        if !(options.prefetch && reads) {
            return self.load_planned(ckpt, options, on_tensor, None);
        }
        let indices = self.matching_indices(ckpt, options);
        ckpt.prefetch_while(&indices, crate::DEFAULT_PREFETCH_BUDGET, |cursor| {
            self.load_planned(ckpt, options, on_tensor, Some(cursor))
        })
    }

    /// The checkpoint entries a load with `options` reads whole (under the prefix, named as
    /// an entry of this module, not split by a tensor-parallel rule).
    fn matching_indices(&self, ckpt: &Checkpoint, options: &LoadOptions) -> Vec<usize> {
        let prefix = normalized_prefix(&options.prefix);
        let split = |key: &str| {
            options
                .tensor_parallel
                .as_ref()
                .is_some_and(|tp| tp.rule_for(key).is_some())
        };
        // Entries read directly bypass the page cache: prefetching them would read them twice.
        let direct = |i: usize, e: usize| {
            options.direct_reads
                && !options.assign
                && ckpt
                    .tensor_at(i)
                    .is_ok_and(|t| direct_read_source(&self.entries[e], &t).is_some())
        };
        (0..ckpt.len())
            .filter(|&i| {
                ckpt.name_at(i)
                    .and_then(|full| full.strip_prefix(&*prefix))
                    .and_then(|key| Some((key, self.index_of(key)?)))
                    .is_some_and(|(key, e)| !split(key) && !direct(i, e))
            })
            .collect()
    }

    fn load_planned(
        &mut self,
        ckpt: &Checkpoint,
        options: &LoadOptions,
        mut on_tensor: Option<OnTensor<'_>>,
        cursor: Option<&PrefetchCursor>,
    ) -> Result<LoadReport> {
        let (report, mut pairs) = self.plan(ckpt, options, cursor)?;
        // Destinations and dtypes, checked before anything changes.
        for (e, _, source) in &pairs {
            let t = source.tensor();
            let entry = &self.entries[*e];
            if t.desc.conj || t.desc.neg {
                return Err(Error::unsupported(format!(
                    "entry '{}': the checkpoint tensor has torch's lazy {} bit set",
                    entry.name(),
                    if t.desc.conj { "conjugate" } else { "negation" }
                )));
            }
            let from = t.desc.dtype;
            let to = entry.dtype;
            let converts = !options.assign || options.convert;
            if converts && !convert::is_convertible(from, to) {
                return Err(Error::dtype_mismatch(format!(
                    "entry '{}': the checkpoint holds {} and the module declares {}; only \
                     float64, float32, float16 and bfloat16 convert into each other",
                    entry.name(),
                    from.name(),
                    to.name()
                )));
            }
            if !options.assign {
                match entry.data {
                    Data::Owned { .. } | Data::Bound { .. } => {}
                    Data::Meta => {
                        return Err(Error::state(format!(
                            "entry '{}' has no data: materialize or bind before a copy load \
                             (or load with ASSIGN)",
                            entry.name()
                        )))
                    }
                    Data::View(_) => {
                        return Err(Error::state(format!(
                            "entry '{}' is a read-only view into a checkpoint (an assign load); \
                             bind memory to it before a copy load",
                            entry.name()
                        )))
                    }
                }
            }
        }
        // File order: ascending file offset, then table order; non-file-backed last.
        // Usually so already: torch writes storages in the order the state dict lists them.
        let file_order =
            |(_, src, s): &Pair<'_>| (s.tensor().file_offset().unwrap_or(u64::MAX), *src);
        if !pairs
            .windows(2)
            .all(|w| file_order(&w[0]) <= file_order(&w[1]))
        {
            pairs.sort_by_cached_key(file_order);
        }
        let outcome = if options.assign {
            self.apply_assign(&pairs, options, &mut on_tensor)
        } else {
            self.apply_copy(&pairs, options, &mut on_tensor, cursor)
                .map(|()| Vec::new())
        };
        outcome.map(|copied| LoadReport {
            loaded: pairs.len(),
            copied,
            ..report
        })
    }

    /// Matches keys and checks shapes. Returns the report and the (entry, tensor) pairs in
    /// checkpoint table order, or torch's error when torch would raise.
    fn plan<'c>(
        &self,
        ckpt: &'c Checkpoint,
        options: &LoadOptions,
        cursor: Option<&PrefetchCursor>,
    ) -> Result<(LoadReport, Vec<Pair<'c>>)> {
        let prefix = normalized_prefix(&options.prefix);
        let mut source = vec![NONE; self.entries.len()];
        let mut unexpected: Vec<&str> = Vec::new();
        // The entry after the last one matched: a checkpoint lists a module's state dict in
        // the module's order, so the next key is nearly always that entry's (no hash, no
        // random read of another entry's name).
        let mut next = 0;
        for i in 0..ckpt.len() {
            let Some(full) = ckpt.name_at(i) else {
                continue;
            };
            let Some(key) = full.strip_prefix(&*prefix) else {
                continue;
            };
            let found = match self.entries.get(next) {
                Some(entry) if entry.name.as_bytes() == key.as_bytes() => Some(next),
                _ => self.index_of(key),
            };
            if let Some(e) = found {
                next = e + 1;
            }
            match found {
                // A duplicate name in the table: a dict holds the first.
                Some(e) if source[e] != NONE => {}
                Some(e) if self.entries[e].is_persistent() => source[e] = i,
                _ => unexpected.push(key),
            }
        }
        let mut planned = Vec::with_capacity(ckpt.len().min(self.entries.len()));
        let mut missing = Vec::new();
        let mut mismatched: Vec<(usize, String)> = Vec::new();
        for (e, &src) in source.iter().enumerate() {
            let entry = &self.entries[e];
            if src == NONE {
                if entry.is_persistent() {
                    missing.push(e);
                }
                continue;
            }
            let split = options
                .tensor_parallel
                .as_ref()
                .and_then(|tp| tp.rule_for(entry.name()).map(|rule| (tp, rule)));
            if let Some((tp, rule)) = split {
                // Only the whole tensor's shape: a tensor saved in chunks is not assembled.
                let shape = ckpt.whole_shape(src)?;
                match tp.share(entry.name(), rule, shape)? {
                    Share::Slice { dim, start, length } => {
                        let mut local = shape.to_vec();
                        local[dim] = length;
                        if local != entry.shape() {
                            mismatched
                                .push((e, share_mismatch(entry, shape, tp, dim, Some(&local))));
                            continue;
                        }
                        planned.push((e, src, Planned::Share { dim, start, length }));
                    }
                    Share::None { dim, chunks } => {
                        let line = share_mismatch(entry, shape, tp, dim, None);
                        mismatched.push((e, format!("{line} (torch.chunk gives {chunks} chunks)")));
                    }
                }
                continue;
            }
            let t = ckpt.tensor_at(src)?;
            // A storage read on first use (per-tensor mode) was consumed just now.
            if let (Some(cursor), false) = (cursor, t.is_mapped()) {
                cursor.consumed(&t);
            }
            if !shape_fits(&t.desc.shape, entry.shape()) {
                let line = size_mismatch(entry.name(), &t.desc.shape, entry.shape());
                mismatched.push((e, line));
                continue;
            }
            planned.push((e, src, Planned::Whole(t)));
        }
        let mut report = LoadReport {
            module_name: self.name.clone(),
            strict: options.strict,
            ..LoadReport::default()
        };
        if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
            // torch's order: module traversal (pre-order), then parameters before buffers,
            // then state-dict order.
            let tree = self.tree();
            let rank = &tree.rank;
            let entry_key = |e: usize| {
                let entry = &self.entries[e];
                (rank[tree.entry_module[e] as usize], entry.is_buffer(), e)
            };
            missing.sort_by_key(|&e| entry_key(e));
            mismatched.sort_by_key(|(e, _)| entry_key(*e));
            unexpected.sort_by_key(|key| rank[tree.owner_of(key) as usize]);
            report.missing = missing
                .iter()
                .map(|&e| self.entries[e].name().to_string())
                .collect();
            report.unexpected = unexpected.iter().map(|k| k.to_string()).collect();
            report.errors = mismatched.into_iter().map(|(_, line)| line).collect();
        }
        if report.is_failure() {
            let kind =
                if report.strict && (!report.missing.is_empty() || !report.unexpected.is_empty()) {
                    ErrorKind::KeyMismatch
                } else {
                    ErrorKind::ShapeMismatch
                };
            return Err(Error::new(kind, report.error_message()));
        }
        // The shares, now that every shape fits: views, or copies of only the share's bytes
        // of a tensor saved in chunks that no one chunk covers.
        // In place (a step and a pair are the same size): a second plan-sized buffer would be
        // fresh memory, which a large load pays for in page faults.
        let pairs = planned
            .into_iter()
            .map(|(e, src, step)| {
                let source = match step {
                    Planned::Whole(t) => Source::Whole(t),
                    Planned::Share { dim, start, length } => {
                        Source::Share(Box::new(ckpt.slice(src, dim as i64, start, length)?))
                    }
                };
                Ok((e, src, source))
            })
            .collect::<Result<Vec<Pair<'c>>>>()?;
        Ok((report, pairs))
    }

    /// Binds views (or, for conversions and with `contiguous` for strided tensors, owned
    /// copies); returns the names of the entries that were copied, in load order.
    fn apply_assign(
        &mut self,
        pairs: &[Pair<'_>],
        options: &LoadOptions,
        on_tensor: &mut Option<OnTensor<'_>>,
    ) -> Result<Vec<String>> {
        // Without a callback or copies nothing can fail mid-way: no undo list needed.
        let keep = options.strict && (on_tensor.is_some() || options.convert || options.contiguous);
        let mut undo: Vec<(usize, Data)> = Vec::new();
        let mut copied = Vec::new();
        for (e, _, source) in pairs {
            let t = &source.tensor();
            let entry = &self.entries[*e];
            let view = view_of(t, entry);
            let (new, is_copy) = if options.convert && t.desc.dtype != entry.dtype {
                source.advise_share();
                (converted(t, entry), true)
            } else if options.contiguous && !view_is_contiguous(&view, entry) {
                source.advise_share();
                (row_major_copy(t, entry), true)
            } else {
                (Ok(Data::View(view)), false)
            };
            let new = match new {
                Ok(data) => data,
                Err(err) => {
                    self.undo(undo);
                    return Err(err);
                }
            };
            if is_copy {
                copied.push(entry.name().to_string());
            }
            let old = std::mem::replace(&mut self.entries[*e].data, new);
            if keep {
                undo.push((*e, old));
            }
            if let Some(f) = on_tensor.as_mut() {
                if !f(&self.entries[*e]) {
                    let name = self.entries[*e].name().to_string();
                    self.undo(undo);
                    return Err(stopped(&name));
                }
            }
        }
        Ok(copied)
    }

    fn undo(&mut self, undo: Vec<(usize, Data)>) {
        for (e, data) in undo.into_iter().rev() {
            self.entries[e].data = data;
        }
    }

    /// Copies in file order. With `direct_reads`, the entries read directly are read first,
    /// all of them, into new buffers (a failure leaves the module as it was), which then
    /// replace the entries' buffers in file order, each before its callback.
    fn apply_copy(
        &mut self,
        pairs: &[Pair<'_>],
        options: &LoadOptions,
        on_tensor: &mut Option<OnTensor<'_>>,
        cursor: Option<&PrefetchCursor>,
    ) -> Result<()> {
        let mut direct = if options.direct_reads {
            self.read_direct(pairs)?
        } else {
            Vec::new()
        };
        let save = options.strict && on_tensor.is_some();
        let mut saved: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut replaced: Vec<(usize, AlignedBuf)> = Vec::new();
        for (k, (e, _, source)) in pairs.iter().enumerate() {
            let t = &source.tensor();
            let entry = &mut self.entries[*e];
            if let Some(new) = direct.get_mut(k).and_then(Option::take) {
                let Data::Owned { buf, .. } = &mut entry.data else {
                    unreachable!("direct reads are planned for owned entries only")
                };
                let old = std::mem::replace(buf, new);
                if save {
                    replaced.push((*e, old));
                }
            } else {
                source.advise_share();
                let to = entry.dtype;
                let dst = entry.writable().expect("checked in planning");
                if save {
                    saved.push((*e, dst.to_vec()));
                }
                copy_converted(t, to, dst);
            }
            if let Some(cursor) = cursor {
                cursor.consumed(t);
            }
            if let Some(f) = on_tensor.as_mut() {
                if !f(&self.entries[*e]) {
                    let name = self.entries[*e].name().to_string();
                    for (e, bytes) in saved.into_iter().rev() {
                        if let Some(dst) = self.entries[e].writable() {
                            dst.copy_from_slice(&bytes);
                        }
                    }
                    for (e, old) in replaced.into_iter().rev() {
                        if let Data::Owned { buf, .. } = &mut self.entries[e].data {
                            *buf = old;
                        }
                    }
                    return Err(stopped(&name));
                }
            }
        }
        Ok(())
    }

    /// The direct reads of a copy load ([`LoadOptions::direct_reads`]): one slot per pair,
    /// holding the entry's bytes in a new buffer, or `None` for a pair copied as usual.
    /// The reads are pieces of at most [`DIRECT_PIECE_BYTES`] in file order, shared by
    /// [`read_threads`](crate::container::aligned::read_threads) threads; the first failure
    /// stops them and is returned, naming the entry.
    #[cfg(unix)]
    fn read_direct(&self, pairs: &[Pair<'_>]) -> Result<Vec<Option<AlignedBuf>>> {
        use crate::container::direct::DirectFile;
        use std::sync::Mutex;
        // The files read, by source (a concatenated checkpoint has several); None: copied.
        let mut files: Vec<(usize, Option<DirectFile>)> = Vec::new();
        let mut bufs: Vec<Option<AlignedBuf>> = Vec::with_capacity(pairs.len());
        // Per read entry: (pair, file, offset of the entry's first byte).
        let mut reads = Vec::new();
        for (k, (e, _, source)) in pairs.iter().enumerate() {
            let entry = &self.entries[*e];
            let found = match source {
                Source::Whole(t) => direct_read_source(entry, t),
                Source::Share(_) => None,
            };
            let Some((source, offset)) = found else {
                bufs.push(None);
                continue;
            };
            let key = Arc::as_ptr(source) as usize;
            let file = match files.iter().position(|(at, _)| *at == key) {
                Some(file) => file,
                None => {
                    files.push((key, DirectFile::open(source)));
                    files.len() - 1
                }
            };
            if files[file].1.is_none() {
                bufs.push(None);
                continue;
            }
            let buf = AlignedBuf::zeroed_for_direct_read(entry.nbytes, offset)
                .map_err(|err| err.context(format!("reading '{}'", entry.name())))?;
            bufs.push(Some(buf));
            reads.push((k, file, offset));
        }
        if reads.is_empty() {
            return Ok(bufs);
        }
        struct Piece<'b> {
            pair: usize,
            file: usize,
            offset: u64,
            window: &'b mut [u8],
            needed: usize,
        }
        let mut pieces = Vec::new();
        // Each piece's window (address, length), for the thread that populates ahead.
        let mut spans = Vec::new();
        let mut total = 0;
        let mut reads = reads.into_iter().peekable();
        for (k, slot) in bufs.iter_mut().enumerate() {
            let Some((_, file, offset)) = reads.next_if(|(at, _, _)| *at == k) else {
                continue;
            };
            let buf = slot.as_mut().expect("a buffer per read");
            let head = buf.direct_head();
            let end = head + self.entries[pairs[k].0].nbytes;
            total += end;
            let window = buf.direct_window().expect("placed for direct reads");
            for (i, window) in window.chunks_mut(DIRECT_PIECE_BYTES).enumerate() {
                let at = i * DIRECT_PIECE_BYTES;
                spans.push((window.as_ptr() as usize, window.len()));
                pieces.push(Piece {
                    pair: k,
                    file,
                    offset: offset - head as u64 + at as u64,
                    needed: (end - at).min(window.len()),
                    window,
                });
            }
        }
        let threads = crate::container::aligned::read_threads(total);
        let queue = Mutex::new(pieces.into_iter());
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        // Pieces the readers have taken; the populating thread stays a few ahead of them.
        let taken = std::sync::atomic::AtomicUsize::new(0);
        let work = || loop {
            if failed.lock().map_or(true, |f| f.is_some()) {
                return;
            }
            let Some(piece) = queue.lock().ok().and_then(|mut q| {
                taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                q.next()
            }) else {
                return;
            };
            let Some(file) = &files[piece.file].1 else {
                continue;
            };
            if let Err(err) = file.read_into(piece.offset, piece.window, piece.needed) {
                let name = self.entries[pairs[piece.pair].0].name();
                let err = err.context(format!("entry '{name}'"));
                if let Ok(mut failed) = failed.lock() {
                    failed.get_or_insert(err);
                }
                return;
            }
        };
        // Fresh memory's faults (zeroing each huge page) are taken by a thread of their own,
        // DIRECT_POPULATE_AHEAD pieces ahead of the reads: a reader then submits its next
        // request without faulting first, and the device is kept busy.
        let populate = || {
            for (i, &(addr, len)) in spans.iter().enumerate() {
                while i >= taken.load(std::sync::atomic::Ordering::Relaxed) + DIRECT_POPULATE_AHEAD
                {
                    if failed.lock().map_or(true, |f| f.is_some())
                        || taken.load(std::sync::atomic::Ordering::Relaxed) > spans.len()
                    {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                crate::container::aligned::populate_for_write(addr, len);
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(populate);
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
        match failed.into_inner() {
            Ok(None) => Ok(bufs),
            Ok(Some(err)) => Err(err),
            Err(_) => Err(Error::io("a direct read failed".to_string())),
        }
    }

    /// Without `O_DIRECT` reads of a file (not Unix), every entry is copied as usual.
    #[cfg(not(unix))]
    fn read_direct(&self, pairs: &[Pair<'_>]) -> Result<Vec<Option<AlignedBuf>>> {
        Ok(pairs.iter().map(|_| None).collect())
    }
}

/// The prefix with its trailing `.` (`module` and `module.` are the same); empty stays empty.
fn normalized_prefix(prefix: &str) -> std::borrow::Cow<'_, str> {
    if prefix.is_empty() || prefix.ends_with('.') {
        std::borrow::Cow::Borrowed(prefix)
    } else {
        std::borrow::Cow::Owned(format!("{prefix}."))
    }
}

fn stopped(name: &str) -> Error {
    Error::callback(format!(
        "the per-tensor callback stopped the load at '{name}'"
    ))
}

/// A planned step before the shapes are all checked: a whole tensor, or where a share lies.
enum Planned<'c> {
    Whole(TensorRef<'c>),
    Share { dim: usize, start: i64, length: i64 },
}

/// torch's size-mismatch line for a tensor-parallel share: the global shape, the split, and
/// the local shape it gives (`None`: this rank gets no chunk) against the declared one.
fn share_mismatch(
    entry: &Entry,
    global: &[i64],
    tp: &TensorParallel,
    dim: usize,
    local: Option<&[i64]>,
) -> String {
    let expected = match local {
        Some(local) => format!("a shard of shape {}", torch_size(local)),
        None => "no shard".to_string(),
    };
    format!(
        "size mismatch for {}: copying a param with shape {} from checkpoint, split for \
         tensor-parallel rank {} of world size {} along dim {dim} (torch.chunk(t, {}, {dim})[{}]) \
         into {expected}, the shape in current model is {}.",
        entry.name(),
        torch_size(global),
        tp.rank,
        tp.world,
        tp.world,
        tp.rank,
        torch_size(entry.shape())
    )
}

/// Copies `t`'s elements in row-major order into `dst`, converting to `to`: in parallel
/// parts for a contiguous tensor, and for a strided one (a share split along a later
/// dimension, a transposed weight) in parallel parts of its outermost dimension, each
/// streamed through a small buffer, so that only the tensor's own bytes are read and no copy
/// of the whole is made.
fn copy_converted(t: &TensorRef<'_>, to: crate::dtype::DType, dst: &mut [u8]) {
    let from = t.desc.dtype;
    let shape = &t.desc.shape;
    if t.desc.is_contiguous() || shape.is_empty() || t.desc.numel == 0 {
        convert::convert(from, &t.contiguous_bytes(), to, dst);
        return;
    }
    let (n_src, n_dst) = (from.itemsize(), to.itemsize());
    let strides = &t.desc.strides;
    let bytes = t.bytes();
    let rows = shape[0] as usize;
    let row_dst = dst.len() / rows;
    let threads = crate::container::copy_threads(dst.len()).clamp(1, rows);
    let rows_per_part = rows.div_ceil(threads);
    // Each part: rows [first, first + count) of the outermost dimension.
    let copy_part = |first: usize, part_dst: &mut [u8]| {
        let count = part_dst.len() / row_dst;
        let mut part_shape = shape.to_vec();
        part_shape[0] = count as i64;
        let start = first * strides[0] as usize * n_src;
        let mut at = 0;
        let streamed = crate::strided::for_each_chunk(
            &bytes[start..],
            n_src,
            &part_shape,
            strides,
            COPY_PIECE_BYTES,
            |piece| {
                let out = piece.len() / n_src * n_dst;
                convert::convert_serial(from, piece, to, &mut part_dst[at..at + out]);
                at += out;
                Ok::<(), std::convert::Infallible>(())
            },
        );
        let Ok(()) = streamed;
    };
    if threads == 1 {
        copy_part(0, dst);
        return;
    }
    std::thread::scope(|scope| {
        let mut parts = dst.chunks_mut(rows_per_part * row_dst).enumerate();
        let first = parts.next();
        for (i, part) in parts {
            scope.spawn(move || copy_part(i * rows_per_part, part));
        }
        if let Some((_, part)) = first {
            copy_part(0, part);
        }
    });
}

/// Where a direct read of `t` into `entry` comes from (the file's source and the offset of
/// the tensor's first byte), or `None` when [`LoadOptions::direct_reads`] does not apply.
fn direct_read_source<'c>(
    entry: &Entry,
    t: &TensorRef<'c>,
) -> Option<(&'c Arc<crate::container::Source>, u64)> {
    let applies = matches!(entry.data, Data::Owned { .. })
        && entry.nbytes >= DIRECT_READ_MIN_BYTES
        && t.desc.dtype == entry.dtype
        && t.desc.is_contiguous()
        && entry.nbytes as u64 <= t.desc.span_bytes()
        && t.is_mapped()
        && !t.storage.copy_pending();
    if !applies {
        return None;
    }
    let Backing::File(source) = t.storage.backing() else {
        return None;
    };
    let offset = t.file_offset()?;
    let in_file = offset.checked_add(entry.nbytes as u64)? <= source.bytes().len() as u64;
    (in_file && offset % crate::container::aligned::BUFFER_ALIGN as u64 == 0)
        .then_some((source, offset))
}

/// Pieces a strided copy gathers at a time (small enough to stay in cache).
const COPY_PIECE_BYTES: usize = 256 << 10;

/// torch accepts a checkpoint shape equal to the model's, and a 1-element 1-d tensor for a 0-d
/// one (backward compatibility with old checkpoints).
fn shape_fits(checkpoint: &[i64], model: &[i64]) -> bool {
    checkpoint == model || (model.is_empty() && checkpoint == [1])
}

/// A view of the checkpoint tensor with the entry's shape (they differ only for the [1] → []
/// case, where the view is element 0).
fn view_of(t: &TensorRef<'_>, entry: &Entry) -> View {
    let same_rank = t.desc.shape.len() == entry.shape().len();
    let contiguous = &entry.dims[entry.dims.len() / 2..];
    let strides = if !same_rank || *t.desc.strides == *contiguous {
        None
    } else {
        Some(Box::from(&*t.desc.strides))
    };
    let nbytes = if same_rank {
        t.desc.span_bytes() as usize
    } else {
        t.desc.dtype.itemsize()
    };
    View {
        backing: t.storage.backing().clone(),
        offset: t.storage.start() + t.desc.byte_offset() as usize,
        dtype: t.desc.dtype,
        strides,
        storage_offset: t.desc.storage_offset,
        nbytes,
        storage_id: t.storage.id,
        file_offset: t.file_offset(),
        mapped: t.storage.is_mapped(),
    }
}

/// True when a view's elements are row-major contiguous (its strides are the shape's own).
fn view_is_contiguous(view: &View, entry: &Entry) -> bool {
    match &view.strides {
        None => true,
        Some(strides) => crate::strided::is_contiguous(entry.shape(), strides),
    }
}

/// The checkpoint tensor's elements in row-major order, in the checkpoint's dtype, in new
/// module-owned storage: a view of that storage, so that the entry keeps the checkpoint's
/// dtype as an assign load does.
fn row_major_copy(t: &TensorRef<'_>, entry: &Entry) -> Result<Data> {
    let dtype = t.desc.dtype;
    let nbytes = entry.numel as usize * dtype.itemsize();
    let mut buf = AlignedBuf::zeroed(nbytes)
        .map_err(|err| err.context(format!("copying '{}' into row-major order", entry.name())))?;
    let src = t.contiguous_bytes();
    crate::container::aligned::parallel_copy(&src[..nbytes], buf.as_mut_slice());
    Ok(Data::View(View {
        backing: Backing::Owned(Arc::new(buf)),
        offset: 0,
        dtype,
        strides: None,
        storage_offset: 0,
        nbytes,
        storage_id: new_storage_id(),
        file_offset: None,
        mapped: false,
    }))
}

/// The checkpoint tensor converted to the entry's declared dtype, in new owned storage.
fn converted(t: &TensorRef<'_>, entry: &Entry) -> Result<Data> {
    let mut buf = AlignedBuf::zeroed(entry.nbytes)
        .map_err(|err| err.context(format!("converting '{}'", entry.name())))?;
    convert::convert(
        t.desc.dtype,
        &t.contiguous_bytes(),
        entry.dtype,
        buf.as_mut_slice(),
    );
    Ok(Data::Owned {
        buf,
        storage_id: new_storage_id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::module::EntryKind;
    use crate::torch::TensorDesc;

    #[test]
    fn convert_without_assign_is_refused_by_the_core() {
        let bytes: Vec<u8> = [1.5f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let desc = TensorDesc {
            dtype: DType::Float32,
            shape: [2].as_slice().into(),
            strides: [1].as_slice().into(),
            storage_offset: 0,
            numel: 2,
            storage: 0,
            requires_grad: false,
            is_parameter: false,
            conj: false,
            neg: false,
        };
        let ckpt = Checkpoint::from_parts(&bytes, &[(0, 8)], vec![("w".into(), desc)]).unwrap();
        let mut m = Module::new("Net");
        m.add("w", DType::Float16, &[2], EntryKind::Parameter)
            .unwrap();
        m.materialize().unwrap();
        let options = LoadOptions {
            convert: true,
            ..LoadOptions::default()
        };
        let err = m.load(&ckpt, &options).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(
            err.message.contains("needs MMCKPT_LOAD_ASSIGN"),
            "{}",
            err.message
        );
        // Nothing was copied into the materialized (zeroed) entry.
        assert_eq!(m.get("w").unwrap().bytes().unwrap(), [0u8; 4]);
        // The same options with assign load and convert.
        let options = LoadOptions {
            assign: true,
            ..options
        };
        m.load(&ckpt, &options).unwrap();
        assert_eq!(m.get("w").unwrap().dtype(), DType::Float16);
    }

    /// A column share big enough to be copied on several threads, in uneven parts, equals
    /// the columns it holds (also converted to a wider dtype).
    #[test]
    fn strided_shares_copy_in_parallel_parts() {
        use super::super::{SplitRule, TensorParallel};
        let (rows, cols) = (2047usize, 4096usize);
        let values: Vec<f32> = (0..rows * cols).map(|i| (i % 1_000_003) as f32).collect();
        let values = &values;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let desc = TensorDesc {
            dtype: DType::Float32,
            shape: [rows as i64, cols as i64].as_slice().into(),
            strides: [cols as i64, 1].as_slice().into(),
            storage_offset: 0,
            numel: (rows * cols) as u64,
            storage: 0,
            requires_grad: false,
            is_parameter: false,
            conj: false,
            neg: false,
        };
        let ckpt =
            Checkpoint::from_parts(&bytes, &[(0, bytes.len())], vec![("w".into(), desc)]).unwrap();
        let half = cols / 2;
        assert!(crate::container::copy_threads(rows * half * 4) > 1 || num_cpus_is_one());
        for dtype in [DType::Float32, DType::Float64] {
            let mut m = Module::new("Net");
            m.add(
                "w",
                dtype,
                &[rows as i64, half as i64],
                EntryKind::Parameter,
            )
            .unwrap();
            m.materialize().unwrap();
            let options = LoadOptions {
                tensor_parallel: Some(TensorParallel::new(1, 2, vec![SplitRule::new("w", 1)])),
                ..LoadOptions::default()
            };
            m.load(&ckpt, &options).unwrap();
            let got = m.get("w").unwrap().bytes().unwrap();
            let want: Vec<u8> = (0..rows)
                .flat_map(|r| (half..cols).map(move |c| values[r * cols + c]))
                .flat_map(|v| match dtype {
                    DType::Float32 => v.to_le_bytes().to_vec(),
                    _ => f64::from(v).to_le_bytes().to_vec(),
                })
                .collect();
            assert!(got == want.as_slice(), "{dtype:?}");
        }
    }

    fn num_cpus_is_one() -> bool {
        std::thread::available_parallelism().map_or(true, |n| n.get() == 1)
    }
}
