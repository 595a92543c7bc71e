//! The RocksDB store: one column family per [`Table`], one shared block cache
//! and one write-buffer manager, so memory is bounded by configuration and
//! not by the number of members or partitions.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rocksdb::{
    properties, BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor,
    DBCompressionType, Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use super::{Batch, KeyValues, Op, Store, StoreError, StoreStats, Table};

/// Memory budget and durability knobs, from `[state]` in the config.
#[derive(Debug, Clone)]
pub struct RocksTuning {
    /// Shared LRU block cache for all column families.
    pub block_cache_bytes: usize,
    /// Budget for all memtables together.
    pub write_buffer_bytes: usize,
    /// `false` trades crash durability of the last writes for speed
    /// (benchmarks only: offsets and state stay consistent, but a crash may
    /// replay more input).
    pub sync_wal: bool,
    /// Keep a write-ahead log at all. Only a store that cannot outlive the
    /// process (`replay` into a temporary directory) goes without: what it
    /// would protect is deleted with the process anyway.
    pub wal: bool,
}

/// L0 files that start a compaction (see [`RocksStore::open`]).
const L0_COMPACTION_TRIGGER: i32 = 8;

impl Default for RocksTuning {
    fn default() -> Self {
        RocksTuning {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 128 << 20,
            sync_wal: false,
            wal: true,
        }
    }
}

pub struct RocksStore {
    db: DB,
    cache: Cache,
    write_opts: WriteOptions,
    /// A write's key order, kept from one write to the next: allocated
    /// afresh, its pages were faulted in and zeroed at every commit.
    order: Mutex<Vec<Sorted>>,
    // Kept alive for the lifetime of the DB that references it.
    _wbm: WriteBufferManager,
}

impl RocksStore {
    pub fn open(path: &Path, tuning: &RocksTuning) -> Result<Self, StoreError> {
        // RocksDB's HyperClockCache (0: its self-sizing table), not the LRU
        // cache: member reads that miss the member cache look blocks up
        // in it, and the LRU cache's lookups (a mutex, list moves) were 5%
        // of the engine thread in replay; HyperClockCache's are lock-free.
        // Measured: 5% less engine CPU for the same replay, run side by
        // side with the LRU build.
        let cache = Cache::new_hyper_clock_cache(tuning.block_cache_bytes, 0);
        // Memtables have their own budget rather than being charged to the
        // block cache: charged, they crowd index and filter blocks out of it.
        let wbm = WriteBufferManager::new_write_buffer_manager(tuning.write_buffer_bytes, false);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        db_opts.set_max_background_jobs(2);
        db_opts.set_keep_log_file_num(3);
        db_opts.set_max_total_wal_size(256 << 20);

        let cfs = Table::ALL.iter().map(|t| {
            let mut o = Options::default();
            let mut bb = BlockBasedOptions::default();
            bb.set_block_cache(&cache);
            bb.set_bloom_filter(10.0, false);
            // Partitioned index and filters: a get loads one 4 KiB partition
            // through the cache instead of a whole index block (hundreds of
            // KiB per 64 MiB file). Monolithic index blocks were evicted by
            // uniform member access and re-read on nearly every get, which
            // cost 75% of the engine's time in the benchmark profile.
            bb.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
            bb.set_partition_filters(true);
            bb.set_metadata_block_size(4096);
            bb.set_cache_index_and_filter_blocks(true);
            bb.set_pin_top_level_index_and_filter(true);
            bb.set_pin_l0_filter_and_index_blocks_in_cache(true);
            o.set_block_based_table_factory(&bb);
            o.set_compression_type(DBCompressionType::Lz4);
            // 32 MiB. At 16 (was 64) a commit's sorted writes went into a
            // skip list of a quarter of the entries, which paid while the
            // engine thread wrote its own commits. Since a store writer
            // thread does, the inserts cost that thread, and a memtable
            // twice as large absorbs twice the rewrites of busy members
            // before a flush: `replay` of the 6M-line Zipf file, two
            // threads, alternating with 16 MiB: compaction samples about
            // halved, the writer's up a quarter, all threads 4-14% fewer
            // (four pairs), one partition 12.7 s against 13.6 s; the
            // engine benches unchanged. 64 MiB: the writer's samples
            // grew as much again for no further gain. The write-buffer
            // manager still caps all memtables together.
            o.set_write_buffer_size(32 << 20);
            // Eight flushed memtables before a compaction, not RocksDB's
            // four. A million members' state (about 70 MB) sits whole in
            // one base level, which every L0 compaction rewrites: twice
            // the input per rewrite halves that work. `perf` of the Zipf
            // engine bench (10M events): compaction threads 37% fewer
            // samples, two engine threads ~12% more events/s on two
            // cores; a get checks up to twice the L0 filters (uniform
            // bench, 128 MiB cache: engine thread ~5% more samples).
            // Writes slow down at 20 files, far above it.
            o.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);
            if *t == Table::Members {
                // Point lookups dominate; a memtable bloom filter makes the
                // get for a member seen for the first time cheap.
                o.set_memtable_prefix_bloom_ratio(0.02);
                o.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(t.name(), o)
        });
        let db =
            DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(tuning.sync_wal);
        write_opts.disable_wal(!tuning.wal);
        Ok(RocksStore {
            db,
            cache,
            write_opts,
            order: Mutex::default(),
            _wbm: wbm,
        })
    }

    fn cf(&self, t: Table) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(t.name())
            .expect("column family created at open")
    }

    fn int_property(&self, t: Table, p: &properties::PropName) -> u64 {
        self.db
            .property_int_value_cf(self.cf(t), p)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Forces memtables to disk (used by tests measuring on-disk size).
    pub fn flush(&self) -> Result<(), StoreError> {
        for t in Table::ALL {
            self.db.flush_cf(self.cf(t))?;
        }
        Ok(())
    }

    pub fn compact(&self) {
        for t in Table::ALL {
            self.db
                .compact_range_cf(self.cf(t), None::<&[u8]>, None::<&[u8]>);
        }
    }
}

/// A write's place in key order: its table and the first 23 bytes of its
/// key, zero-padded, big-endian in three words (they decide nearly every
/// comparison without reading the key, a cache miss each: a timer key's
/// partition and due time take 12), then its index in the batch.
#[derive(Debug, Clone, Copy)]
struct Sorted {
    prefix: [u64; 3],
    index: u32,
}

impl Sorted {
    fn new(op: Op<'_>, index: usize) -> Self {
        let mut p = [0u8; 24];
        p[0] = op.table as u8;
        let n = op.key.len().min(23);
        p[1..=n].copy_from_slice(&op.key[..n]);
        let word = |i: usize| u64::from_be_bytes(p[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Sorted {
            prefix: [word(0), word(1), word(2)],
            index: u32::try_from(index).expect("under 4 billion writes in a batch"),
        }
    }
}

impl RocksStore {
    fn write_with(&self, batch: &Batch, opts: &WriteOptions) -> Result<(), StoreError> {
        let wb = self.write_batch(batch);
        self.db.write_opt(wb, opts)?;
        Ok(())
    }

    /// `batch` as RocksDB's write batch, in key order. The order's buffer
    /// is locked only while the write batch is built, not while it is
    /// written.
    fn write_batch(&self, batch: &Batch) -> WriteBatch {
        // Key order lets the memtable reuse its skip-list position from one
        // insert to the next.
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        order.clear();
        order.extend(batch.iter().enumerate().map(|(i, op)| Sorted::new(op, i)));
        // Two writes to one key keep their order: the index decides last.
        order.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| batch.op_at(a.index).key.cmp(batch.op_at(b.index).key))
                .then(a.index.cmp(&b.index))
        });
        let cfs = Table::ALL.map(|t| self.cf(t));
        // Sized up front: a commit of tens of thousands of members grown
        // by doubling copied its bytes over and over (3% of an engine
        // thread at a million members). Per record: a tag, the column
        // family id and two length prefixes, at most 16 bytes.
        let bytes = batch.payload_bytes() + 16 * batch.len();
        let mut wb = WriteBatch::with_capacity_bytes(bytes + 12);
        // In key order the writes lie all over the batch, and copying each
        // into the write batch waited for memory (a sixth of this thread in
        // `replay`): where a write sits is asked for 2·AHEAD writes on, its
        // bytes AHEAD on.
        const AHEAD: usize = 8;
        for (k, s) in order.iter().enumerate() {
            if let Some(far) = order.get(k + 2 * AHEAD) {
                batch.hint_entry(far.index);
            }
            if let Some(near) = order.get(k + AHEAD) {
                batch.hint_bytes(near.index);
            }
            let op = batch.op_at(s.index);
            let cf = cfs[op.table as usize];
            match op.value {
                Some(v) => wb.put_cf(cf, op.key, v),
                None => wb.delete_cf(cf, op.key),
            }
        }
        wb
    }
}

impl Store for RocksStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(table), key)?
            .map(|v| v.to_vec()))
    }

    /// One batched read (RocksDB `MultiGet`): index, filter and data blocks
    /// shared by several keys are looked up once.
    fn multi_get(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let sorted = keys.windows(2).all(|w| w[0] <= w[1]);
        self.db
            .batched_multi_get_cf(self.cf(table), keys, sorted)
            .into_iter()
            .map(|r| r.map(|v| v.map(|v| v.to_vec())).map_err(StoreError::from))
            .collect()
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(table), ro);
        it.seek(from);
        let mut out = Vec::new();
        while it.valid() && out.len() < limit {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                out.push((k.to_vec(), v.to_vec()));
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_with(&batch, &self.write_opts)
    }

    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write_with(batch, &self.write_opts)
    }

    fn write_bulk(&self, batch: Batch) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.write_with(&batch, &opts)
    }

    /// Flushes the memtables of every table to SST files: what was written
    /// without the write-ahead log is durable afterwards.
    fn persist(&self) -> Result<(), StoreError> {
        for t in Table::ALL {
            self.db.flush_cf(self.cf(t))?;
        }
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        let sum = |p| {
            Table::ALL
                .iter()
                .map(|t| self.int_property(*t, p))
                .sum::<u64>()
        };
        StoreStats {
            live_sst_bytes: sum(properties::LIVE_SST_FILES_SIZE),
            block_cache_usage_bytes: self.cache.get_usage() as u64,
            pending_compaction_bytes: sum(properties::ESTIMATE_PENDING_COMPACTION_BYTES),
            memtable_bytes: sum(properties::CUR_SIZE_ALL_MEM_TABLES),
            estimated_members: self.int_property(Table::Members, properties::ESTIMATE_NUM_KEYS),
            write_stalled: sum(properties::IS_WRITE_STOPPED) > 0
                || sum(properties::ACTUAL_DELAYED_WRITE_RATE) > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use proptest::prelude::*;

    /// Keys from a small space that shares long prefixes (23 bytes and
    /// more, past what the key order reads inline), short keys that are
    /// prefixes of longer ones, and every table.
    fn op() -> impl Strategy<Value = (Table, Vec<u8>, Option<Vec<u8>>)> {
        let table = prop::sample::select(Table::ALL.to_vec());
        let key = (0usize..4, 0u8..3, 0usize..3).prop_map(|(shared, last, extra)| {
            let mut k = vec![7u8; [0, 1, 22, 23][shared]];
            k.push(last);
            k.extend(std::iter::repeat_n(0u8, extra));
            k
        });
        let value = prop::option::of(prop::collection::vec(any::<u8>(), 0..40));
        (table, key, value)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn a_batch_lands_as_its_writes_applied_in_order(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..60), 1..4)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksStore::open(dir.path(), &RocksTuning::default()).unwrap();
            let memory = MemoryStore::new();
            for ops in &batches {
                let mut batch = Batch::default();
                for (table, key, value) in ops {
                    match value {
                        Some(v) => batch.put(*table, key, v),
                        None => batch.delete(*table, key),
                    }
                }
                rocks.write_ref(&batch).unwrap();
                memory.write_ref(&batch).unwrap();
            }
            for table in Table::ALL {
                let all = |s: &dyn Store| s.scan(table, &[], &[0xff; 32], usize::MAX).unwrap();
                prop_assert_eq!(all(&rocks), all(&memory), "{:?}", table);
            }
        }
    }
}
