//! The portable GEMM: Goto/BLIS blocking and packing shared by every kernel, and a plain
//! Rust 6×4 micro-kernel.
//!
//! # Blocking
//! `C` is computed in column blocks of [`NC`] columns; for each, the depth is cut into
//! slices of [`KC`]; each `KC × NC` slice of `B` is packed once into column panels of
//! `NR` and reused for every [`MC`]-row block of `A`, which is packed into row panels of
//! `MR`. The micro-kernel then multiplies one `MR × KC` panel of `A` by one `KC × NR`
//! panel of `B` into an `MR × NR` tile of `C`. The tile shape is a const parameter of
//! [`blocked_gemm`]: the scalar and AVX2 kernels use [`MR`] × [`NR`] = 6×4, whose `B`
//! panel (8 KiB) stays in L1 and whose packed `A` block (144 KiB) stays in L2 while the
//! micro-kernel streams through them; the AVX-512 kernel uses a wider tile.
//!
//! Packing pads ragged edges with zeros, so the micro-kernel always sees full panels;
//! only the store of an edge tile into `C` is clipped ([`store_tile`]).
//!
//! Everything here is safe code and wraps modulo 2^64.

/// Rows of the scalar and AVX2 micro-kernel tile (and of their packed `A` panels).
pub(super) const MR: usize = 6;
/// Columns of the scalar and AVX2 micro-kernel tile (and of their packed `B` panels): one
/// AVX2 vector of u64.
pub(super) const NR: usize = 4;
/// Depth of one packed slice of `A` and `B`.
const KC: usize = 256;
/// Rows of `A` packed at once; a multiple of every kernel's tile height.
const MC: usize = 72;
/// Columns of `B` packed at once; a multiple of every kernel's tile width.
const NC: usize = 2048;

/// Where a micro-kernel writes its tile: `C[row, col] (+)= tile[row][col]` for
/// `row < rows`, `col < columns`, with `C[row, col]` at `c[row * row_stride + col]`.
pub(super) struct TileDestination<'a> {
    /// `C`, starting at the tile's top-left element.
    pub(super) c: &'a mut [u64],
    /// Distance between consecutive rows of `C` (its column count).
    pub(super) row_stride: usize,
    /// Valid rows of the tile, `1..=MR`.
    pub(super) rows: usize,
    /// Valid columns of the tile, `1..=NR`.
    pub(super) columns: usize,
    /// Add the tile to `C` (later depth slices) instead of overwriting it (the first).
    pub(super) accumulate: bool,
}

/// Blocked `C = A·B mod 2^64` around an `MR × NR` micro-kernel.
///
/// `micro_kernel(a_panel, b_panel, destination)` receives an `MR × depth` panel of `A`
/// packed depth-major (`a_panel[p * MR + r] = A[r, p]`, length `MR * depth`) and a
/// `depth × NR` panel of `B` (`b_panel[p * NR + j] = B[p, j]`, length `NR * depth`), with
/// `1 <= depth <= KC`, and must store or add their product into `destination`.
///
/// Layout as in [`super::gemm_u64`]; panics if a buffer is shorter than its shape.
#[inline(always)]
pub(super) fn blocked_gemm<const MR: usize, const NR: usize, F>(
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
    mut micro_kernel: F,
) where
    F: FnMut(&[u64], &[u64], TileDestination<'_>),
{
    // The blocks must hold whole panels (this also rules out an empty tile).
    const { assert!(MC.is_multiple_of(MR) && NC.is_multiple_of(NR)) };
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm buffers too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0);
        return;
    }
    let mut packed_a = vec![0; MC.min(m.next_multiple_of(MR)) * KC.min(k)];
    let mut packed_b = vec![0; NC.min(n.next_multiple_of(NR)) * KC.min(k)];
    for column_block in (0..n).step_by(NC) {
        let columns = NC.min(n - column_block);
        for depth_block in (0..k).step_by(KC) {
            let depth = KC.min(k - depth_block);
            pack_b::<NR>(
                b,
                n,
                depth_block,
                depth,
                column_block,
                columns,
                &mut packed_b,
            );
            for row_block in (0..m).step_by(MC) {
                let rows = MC.min(m - row_block);
                pack_a::<MR>(a, k, row_block, rows, depth_block, depth, &mut packed_a);
                let b_panels = packed_b.chunks_exact(NR * depth).take(columns.div_ceil(NR));
                for (b_index, b_panel) in b_panels.enumerate() {
                    let column = column_block + b_index * NR;
                    let a_panels = packed_a.chunks_exact(MR * depth).take(rows.div_ceil(MR));
                    for (a_index, a_panel) in a_panels.enumerate() {
                        let row = row_block + a_index * MR;
                        let destination = TileDestination {
                            c: &mut c[row * n + column..],
                            row_stride: n,
                            rows: MR.min(m - row),
                            columns: NR.min(n - column),
                            accumulate: depth_block > 0,
                        };
                        micro_kernel(a_panel, b_panel, destination);
                    }
                }
            }
        }
    }
}

/// Packs `A[row_block .. row_block + rows, depth_block .. depth_block + depth]` (`A` has
/// `k` columns) into `MR`-row panels, depth-major inside a panel, zero-padding the last
/// panel's missing rows.
fn pack_a<const MR: usize>(
    a: &[u64],
    k: usize,
    row_block: usize,
    rows: usize,
    depth_block: usize,
    depth: usize,
    packed: &mut [u64],
) {
    let panels = packed[..rows.div_ceil(MR) * MR * depth].chunks_exact_mut(MR * depth);
    for (panel_index, panel) in panels.enumerate() {
        let first_row = panel_index * MR;
        let panel_rows = MR.min(rows - first_row);
        for r in 0..MR {
            if r < panel_rows {
                let start = (row_block + first_row + r) * k + depth_block;
                for (p, &value) in a[start..start + depth].iter().enumerate() {
                    panel[p * MR + r] = value;
                }
            } else {
                for p in 0..depth {
                    panel[p * MR + r] = 0;
                }
            }
        }
    }
}

/// Packs `B[depth_block .. depth_block + depth, column_block .. column_block + columns]`
/// (`B` has `n` columns) into `NR`-column panels, depth-major inside a panel,
/// zero-padding the last panel's missing columns.
fn pack_b<const NR: usize>(
    b: &[u64],
    n: usize,
    depth_block: usize,
    depth: usize,
    column_block: usize,
    columns: usize,
    packed: &mut [u64],
) {
    // Panel by panel, so that the writes are sequential; each row of `B` is read in
    // `NR`-element pieces whose cache lines the neighbouring panel reuses from L1.
    let panel_count = columns.div_ceil(NR);
    let panels = packed[..panel_count * NR * depth].chunks_exact_mut(NR * depth);
    for (panel_index, panel) in panels.enumerate() {
        let first_column = column_block + panel_index * NR;
        let valid = NR.min(columns - panel_index * NR);
        let (steps, _) = panel.as_chunks_mut::<NR>();
        for (p, step) in steps.iter_mut().enumerate() {
            let start = (depth_block + p) * n + first_column;
            if valid == NR {
                // A fixed-length copy: a few moves, not a `memmove` call.
                step.copy_from_slice(&b[start..start + NR]);
            } else {
                for (j, value) in step.iter_mut().enumerate() {
                    *value = if j < valid { b[start + j] } else { 0 };
                }
            }
        }
    }
}

/// Stores (or adds, per `destination.accumulate`) the valid part of a computed tile.
#[inline(always)]
pub(super) fn store_tile<const MR: usize, const NR: usize>(
    tile: &[[u64; NR]; MR],
    destination: TileDestination<'_>,
) {
    let TileDestination {
        c,
        row_stride,
        rows,
        columns,
        accumulate,
    } = destination;
    for (r, tile_row) in tile.iter().enumerate().take(rows) {
        let c_row = &mut c[r * row_stride..][..columns];
        if accumulate {
            for (out, &value) in c_row.iter_mut().zip(tile_row) {
                *out = out.wrapping_add(value);
            }
        } else {
            c_row.copy_from_slice(&tile_row[..columns]);
        }
    }
}

/// Portable packed `C = A·B mod 2^64`; contract as in [`super::gemm_u64`].
pub(super) fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    blocked_gemm::<MR, NR, _>(m, k, n, a, b, c, micro_kernel);
}

/// The portable 6×4 micro-kernel: `tile = a_panel · b_panel` with `wrapping_mul` and
/// `wrapping_add` (see [`blocked_gemm`] for the panel layout).
///
/// It sweeps the panels twice, three rows at a time: 12 accumulators fit in the 16
/// general registers, whereas all 24 at once spill to the stack (measured: 1.8 against
/// 2.8 GMAC/s). The second sweep reads the 8 KiB `B` panel again from L1.
#[inline(always)]
fn micro_kernel(a_panel: &[u64], b_panel: &[u64], destination: TileDestination<'_>) {
    const HALF: usize = MR / 2;
    let mut tile = [[0u64; NR]; MR];
    let (a_steps, _) = a_panel.as_chunks::<MR>();
    let (b_steps, _) = b_panel.as_chunks::<NR>();
    for (half, tile_half) in tile.as_chunks_mut::<HALF>().0.iter_mut().enumerate() {
        let rows = half * HALF..(half + 1) * HALF;
        for (a_step, b_step) in a_steps.iter().zip(b_steps) {
            for (tile_row, &a_value) in tile_half.iter_mut().zip(&a_step[rows.clone()]) {
                for (accumulator, &b_value) in tile_row.iter_mut().zip(b_step) {
                    *accumulator = accumulator.wrapping_add(a_value.wrapping_mul(b_value));
                }
            }
        }
    }
    store_tile(&tile, destination);
}

/// Textbook triple loop `C = A·B mod 2^64` (row-major, `C` overwritten): the reference
/// the packed kernels are tested against.
#[cfg(test)]
pub(crate) fn gemm_u64_naive(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0u64;
            for p in 0..k {
                sum = sum.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
            }
            c[i * n + j] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn packed_scalar_matches_naive(
            (m, k, n, a, b) in (0usize..40, 0usize..40, 0usize..40).prop_flat_map(|(m, k, n)| (
                Just(m), Just(k), Just(n),
                proptest::collection::vec(any::<u64>(), m * k),
                proptest::collection::vec(any::<u64>(), k * n),
            ))
        ) {
            let mut expected = vec![0; m * n];
            gemm_u64_naive(m, k, n, &a, &b, &mut expected);
            let mut found = vec![u64::MAX; m * n];
            gemm_u64(m, k, n, &a, &b, &mut found);
            prop_assert_eq!(expected, found);
        }
    }

    #[test]
    fn packing_zero_pads_ragged_edges() {
        // A is 7×3: two panels, the second with one real row and five zero rows.
        let a: Vec<u64> = (1..=21).collect();
        let mut packed = vec![u64::MAX; 2 * MR * 3];
        pack_a::<MR>(&a, 3, 0, 7, 0, 3, &mut packed);
        assert_eq!(&packed[..MR], &[1, 4, 7, 10, 13, 16]);
        assert_eq!(&packed[MR * 3..MR * 4], &[19, 0, 0, 0, 0, 0]);
        // B is 2×5: two panels, the second with one real column.
        let b: Vec<u64> = (1..=10).collect();
        let mut packed = vec![u64::MAX; 2 * NR * 2];
        pack_b::<NR>(&b, 5, 0, 2, 0, 5, &mut packed);
        assert_eq!(
            packed,
            vec![1, 2, 3, 4, 6, 7, 8, 9, 5, 0, 0, 0, 10, 0, 0, 0]
        );
    }
}
