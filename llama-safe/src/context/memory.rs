//! KV cache operations on sequences: clear, remove, copy, keep, shift, and
//! position queries.
//!
//! Positions are given as ranges (`..`, `10..`, `0..32`); sequence ids must
//! be below the context's `n_seq_max`, or the call is
//! [`Error::InvalidSequence`] (llama.cpp itself would abort); a bad range is
//! [`Error::InvalidParameter`].

use super::LlamaContext;
use crate::error::{Error, Result};
use std::ops::{Bound, RangeBounds};

impl LlamaContext {
    /// Clears the KV cache of every sequence.
    pub fn clear(&mut self) {
        let _device = self.device_guard();
        // SAFETY: the memory handle lives with the context.
        unsafe { llama_safe_sys::llama_memory_clear(self.memory(), true) };
        self.outputs.clear();
    }

    /// Removes positions `from..` of sequence 0, so generation can continue
    /// from `from`. Returns `false` where the cache cannot cut a sequence
    /// (recurrent models).
    pub fn truncate(&mut self, from: u32) -> bool {
        self.seq_remove(Some(0), from..).unwrap_or(false)
    }

    /// Removes the cells of `seq` (every sequence with `None`) whose
    /// positions are in `range`. `Ok(false)` where the cache cannot remove
    /// part of a sequence (recurrent models); a whole sequence always goes.
    ///
    /// ```no_run
    /// # fn f(ctx: &mut llama_safe::LlamaContext) -> llama_safe::Result<()> {
    /// ctx.seq_remove(Some(1), ..)?; // forget sequence 1
    /// ctx.seq_remove(None, 100..)?; // cut every sequence at position 100
    /// # Ok(()) }
    /// ```
    pub fn seq_remove(&mut self, seq: Option<u32>, range: impl RangeBounds<u32>) -> Result<bool> {
        let _device = self.device_guard();
        let seq = match seq {
            Some(s) => self.check_seq(s)?,
            None => -1,
        };
        let (p0, p1) = positions(&range)?;
        // SAFETY: the sequence id is checked (or -1, "any"); positions are
        // non-negative or -1 ("open").
        Ok(unsafe { llama_safe_sys::llama_memory_seq_rm(self.memory(), seq, p0, p1) })
    }

    /// Makes the cells of `src` in `range` also belong to `dst` (no copy of
    /// data: the cells are shared), e.g. to fork a common prompt into
    /// several sequences.
    pub fn seq_copy(&mut self, src: u32, dst: u32, range: impl RangeBounds<u32>) -> Result<()> {
        let _device = self.device_guard();
        let src = self.check_seq(src)?;
        let dst = self.check_seq(dst)?;
        let (p0, p1) = positions(&range)?;
        if !self.kv_unified && src != dst && (p0, p1) != (0, -1) {
            // Each sequence has its own stream here, and llama.cpp copies
            // between streams only whole (GGML_ASSERT "seq_cp() is only
            // supported for full KV buffers" in llama_kv_cache::seq_cp).
            return Err(Error::InvalidParameter {
                name: "range",
                reason: format!(
                    "a copy between sequences of a non-unified KV cache must cover all positions (`..`), not {p0}..{p1}"
                ).into(),
            });
        }
        // SAFETY: ids checked; positions as in seq_remove; a partial copy
        // across streams, which llama.cpp asserts against, is ruled out above.
        unsafe { llama_safe_sys::llama_memory_seq_cp(self.memory(), src, dst, p0, p1) };
        Ok(())
    }

    /// Removes every other sequence, keeping only `seq`.
    ///
    /// (llama.cpp's own `seq_keep` only reaches the buffer `seq` lives in,
    /// which, without a unified cache, leaves the other sequences in theirs;
    /// this removes each of them instead.)
    pub fn seq_keep(&mut self, seq: u32) -> Result<()> {
        let _device = self.device_guard();
        let keep = self.check_seq(seq)?;
        for other in (0..self.n_seq_max() as i32).filter(|&s| s != keep) {
            // SAFETY: every id below n_seq_max is valid; removing a whole
            // sequence never fails.
            unsafe { llama_safe_sys::llama_memory_seq_rm(self.memory(), other, -1, -1) };
        }
        Ok(())
    }

    /// Adds `delta` to the positions of `seq`'s cells in `range` (a context
    /// shift). [`Error::InvalidParameter`] where the cache cannot shift.
    pub fn seq_shift(&mut self, seq: u32, range: impl RangeBounds<u32>, delta: i32) -> Result<()> {
        let _device = self.device_guard();
        let seq = self.check_seq(seq)?;
        let (p0, p1) = positions(&range)?;
        // SAFETY: id checked.
        let max = unsafe { llama_safe_sys::llama_memory_seq_pos_max(self.memory(), seq) };
        if i64::from(max) + i64::from(delta) > i64::from(i32::MAX) {
            // llama.cpp adds the delta to an int32 position without a check
            // (signed overflow in C++).
            return Err(Error::InvalidParameter {
                name: "delta",
                reason: format!("position {max} + {delta} overflows i32").into(),
            });
        }
        // SAFETY: the memory handle lives with the context.
        if !unsafe { llama_safe_sys::llama_memory_can_shift(self.memory()) } {
            return Err(Error::InvalidParameter {
                name: "seq_shift",
                reason: "this model's KV cache cannot shift positions".into(),
            });
        }
        // SAFETY: id checked, positions as in seq_remove.
        unsafe { llama_safe_sys::llama_memory_seq_add(self.memory(), seq, p0, p1, delta) };
        Ok(())
    }

    /// The smallest position of `seq` in the cache; `None` if it is empty
    /// (or `seq` is not below `n_seq_max`).
    pub fn seq_pos_min(&self, seq: u32) -> Option<u32> {
        let seq = self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { llama_safe_sys::llama_memory_seq_pos_min(self.memory(), seq) };
        u32::try_from(p).ok()
    }

    /// The largest position of `seq` in the cache; `None` if it is empty
    /// (or `seq` is not below `n_seq_max`).
    pub fn seq_pos_max(&self, seq: u32) -> Option<u32> {
        let seq = self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { llama_safe_sys::llama_memory_seq_pos_max(self.memory(), seq) };
        u32::try_from(p).ok()
    }

    pub(super) fn check_seq(&self, seq: u32) -> Result<i32> {
        let n_seq_max = self.n_seq_max();
        if seq >= n_seq_max {
            return Err(Error::InvalidSequence {
                seq: seq.into(),
                n_seq_max,
            });
        }
        Ok(seq as i32)
    }
}

/// A position range as llama.cpp's `[p0, p1)` with -1 for an open end.
fn positions(range: &impl RangeBounds<u32>) -> Result<(i32, i32)> {
    let to_i32 = |p: u64| {
        i32::try_from(p).map_err(|_| Error::InvalidParameter {
            name: "range",
            reason: format!("position {p} is beyond i32::MAX").into(),
        })
    };
    let p0 = match range.start_bound() {
        Bound::Unbounded => 0,
        Bound::Included(&p) => to_i32(p.into())?,
        Bound::Excluded(&p) => to_i32(u64::from(p) + 1)?,
    };
    let p1 = match range.end_bound() {
        Bound::Unbounded => -1,
        Bound::Excluded(&p) => to_i32(p.into())?,
        Bound::Included(&p) => to_i32(u64::from(p) + 1)?,
    };
    if p1 >= 0 && p1 < p0 {
        return Err(Error::InvalidParameter {
            name: "range",
            reason: format!("empty or reversed position range {p0}..{p1}").into(),
        });
    }
    Ok((p0, p1))
}
