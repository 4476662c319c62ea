//! How an upload of unknown length is cut into parts (S3) or blocks (Azure).
//!
//! The archive is streamed, so its size is not known when the upload starts, and providers
//! limit the number of parts (S3: 10,000; Scaleway: 1,000; Azure: 50,000 blocks). Parts
//! have the configured size for the first half of the allowed count, which covers every
//! archive up to `limit / 2 x part size` (78 GiB with S3's defaults). Past that, the size
//! doubles every twentieth of the limit, up to the provider's largest part, so even a
//! 1,000-part provider stores archives of about a terabyte.
//!
//! Memory is held by the part being filled plus the parts uploading. The number uploading
//! at once shrinks as parts grow, so that their bytes stay within `part size x in flight`;
//! only when a single part outgrows that budget (archives beyond the first half) does the
//! budget grow, to one part uploading and one filling.

/// The part layout of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    /// The configured part size in bytes (`AWS_PART_SIZE`, `AZURE_STORAGE_BLOCK_SIZE`).
    pub base: u64,
    /// The provider's limit on the number of parts.
    pub max_parts: u64,
    /// The provider's largest part.
    pub max_part_size: u64,
    /// Parts of the configured size uploading at once.
    pub in_flight: usize,
}

impl PartPlan {
    /// The size at which part `index` (0-based) is cut. The last part may be smaller.
    pub fn size(&self, index: u64) -> u64 {
        let half = self.max_parts / 2;
        if index < half {
            return self.base.min(self.max_part_size);
        }
        let step = (self.max_parts / 20).max(1);
        let doublings = ((index - half) / step + 1).min(32) as u32;
        self.base
            .saturating_mul(1u64 << doublings)
            .min(self.max_part_size)
    }

    /// How many parts of `size` may upload at once within the memory budget (at least 1).
    pub fn in_flight_for(&self, size: u64) -> usize {
        let budget = self.base.saturating_mul(self.in_flight as u64);
        (budget / size.max(1)).clamp(1, self.in_flight as u64) as usize
    }

    /// The largest archive this plan can store.
    pub fn capacity(&self) -> u64 {
        (0..self.max_parts).map(|i| self.size(i)).sum()
    }

    /// Bytes held at most: the parts uploading plus the one being filled.
    #[cfg(test)]
    fn peak_memory(&self, index: u64) -> u64 {
        let size = self.size(index);
        size * (self.in_flight_for(size) as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    fn s3(base_mib: u64, max_parts: u64) -> PartPlan {
        PartPlan {
            base: base_mib * MIB,
            max_parts,
            max_part_size: 5 * GIB,
            in_flight: 4,
        }
    }

    #[test]
    fn parts_keep_the_configured_size_for_half_the_limit() {
        let plan = s3(16, 10_000);
        assert!((0..5_000).all(|i| plan.size(i) == 16 * MIB));
        assert_eq!(plan.size(5_000), 32 * MIB);
        assert_eq!(plan.size(5_499), 32 * MIB);
        assert_eq!(plan.size(5_500), 64 * MIB);
        // 78 GiB stay at a fixed memory budget.
        let fixed: u64 = (0..5_000).map(|i| plan.size(i)).sum();
        assert_eq!(fixed, 5_000 * 16 * MIB);
        assert_eq!(plan.peak_memory(4_999), 5 * 16 * MIB);
    }

    #[test]
    fn sizes_never_shrink_and_never_pass_the_provider_maximum() {
        for plan in [s3(5, 10_000), s3(16, 1_000), s3(5_120, 10_000), s3(16, 1)] {
            let mut last = 0;
            for i in 0..plan.max_parts {
                let size = plan.size(i);
                assert!(
                    size >= last && size <= plan.max_part_size,
                    "{plan:?} part {i}"
                );
                last = size;
            }
        }
    }

    #[test]
    fn large_archives_fit_under_every_provider_limit() {
        // AWS with the smallest part size allowed: nearly its 5 TiB object size limit.
        assert!(s3(5, 10_000).capacity() >= 4 * TIB + 800 * GIB);
        // With the default part size, beyond it.
        assert!(s3(16, 10_000).capacity() >= 5 * TIB);
        // Scaleway's 1,000 parts with the default part size: about a terabyte.
        assert!(s3(16, 1_000).capacity() >= 900 * GIB);
        // Azure: 50,000 blocks of up to 4000 MiB.
        let azure = PartPlan {
            base: 16 * MIB,
            max_parts: 50_000,
            max_part_size: 4_000 * MIB,
            in_flight: 4,
        };
        assert!(azure.capacity() >= 35 * TIB);
    }

    #[test]
    fn bytes_uploading_stay_within_the_budget_while_parts_fit_in_it() {
        let plan = s3(16, 1_000);
        for i in 0..plan.max_parts {
            let size = plan.size(i);
            let uploading = size * plan.in_flight_for(size) as u64;
            if size <= 4 * 16 * MIB {
                assert!(uploading <= 4 * 16 * MIB, "part {i}");
            } else {
                assert_eq!(plan.in_flight_for(size), 1, "part {i}");
            }
        }
    }
}
