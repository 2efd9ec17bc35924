//! The `label` output policy: each row's argmax under MPC, so the client learns only
//! the class (DESIGN.md §1).

use veil_core::RingTensor;
use veil_mpc::Protocol;

use crate::Result;

/// The index of each row's largest element, as a secret ring integer per row (ties go
/// to the lowest index, as in `veil_model::plain::argmax_rows`): a tournament over the
/// columns; each level compares neighbouring survivors (DReLU, one round) and moves the winners' values and indices
/// with one product (one round).
pub fn argmax_rows<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    shape: &[usize],
    bits: u32,
) -> Result<P::Shared> {
    let (rows, columns) = match shape {
        &[rows, columns] if columns > 0 => (rows, columns),
        _ => {
            return Err(veil_model::Error::InvalidGraph {
                node: 0,
                reason: format!("the label policy needs a [batch, classes] output, has {shape:?}"),
            }
            .into());
        }
    };
    // Column-major blocks: block c holds column c of every row.
    let column_major: Vec<usize> = (0..columns)
        .flat_map(|c| (0..rows).map(move |r| r * columns + c))
        .collect();
    let mut values = protocol.gather(value, &column_major, &[columns * rows])?;
    let index_data: Vec<u64> = (0..columns)
        .flat_map(|c| std::iter::repeat_n(c as u64, rows))
        .collect();
    let mut indices = protocol.public(&RingTensor::new(vec![columns * rows], index_data)?)?;
    let mut count = columns;
    while count > 1 {
        let half = count / 2;
        let block = |range: std::ops::Range<usize>| -> Vec<usize> {
            (range.start * rows..range.end * rows).collect()
        };
        // Neighbours pair up, (0, 1), (2, 3), …, so each survivor stands for a run of
        // consecutive columns in order, and a tie goes to the left run: the lowest index
        // among the maxima, as in the plain executor.
        let left: Vec<usize> = (0..half).flat_map(|p| block(2 * p..2 * p + 1)).collect();
        let right: Vec<usize> = (0..half)
            .flat_map(|p| block(2 * p + 1..2 * p + 2))
            .collect();
        let paired = [half * rows];
        let value_left = protocol.gather(&values, &left, &paired)?;
        let value_right = protocol.gather(&values, &right, &paired)?;
        let index_left = protocol.gather(&indices, &left, &paired)?;
        let index_right = protocol.gather(&indices, &right, &paired)?;
        let value_difference = protocol.sub(&value_left, &value_right)?;
        let left_wins = protocol.drelu(&value_difference, bits)?;
        let index_difference = protocol.sub(&index_left, &index_right)?;
        // One product moves both: winner = right + d·(left − right).
        let both_bits = protocol.concat(&[&left_wins, &left_wins])?;
        let both_differences = protocol.concat(&[&value_difference, &index_difference])?;
        let moves = protocol.mul(&both_bits, &both_differences)?;
        let first = |n: usize| -> Vec<usize> { (0..n).collect() };
        let value_moves = protocol.gather(&moves, &first(half * rows), &paired)?;
        let index_moves: Vec<usize> = (half * rows..2 * half * rows).collect();
        let index_moves = protocol.gather(&moves, &index_moves, &paired)?;
        let value_winners = protocol.add(&value_right, &value_moves)?;
        let index_winners = protocol.add(&index_right, &index_moves)?;
        if count % 2 == 1 {
            let rest = block(2 * half..count);
            let value_rest = protocol.gather(&values, &rest, &[rows])?;
            let index_rest = protocol.gather(&indices, &rest, &[rows])?;
            values = protocol.concat(&[&value_winners, &value_rest])?;
            indices = protocol.concat(&[&index_winners, &index_rest])?;
        } else {
            values = value_winners;
            indices = index_winners;
        }
        count = count.div_ceil(2);
    }
    Ok(protocol.reshape(indices, &[rows])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::FixedPoint;
    use veil_mpc::Cleartext;

    fn labels(rows: &[&[i64]]) -> Vec<u64> {
        let columns = rows[0].len();
        let data: Vec<u64> = rows
            .iter()
            .flat_map(|row| row.iter())
            .map(|&v| v as u64)
            .collect();
        let mut protocol = Cleartext::new(FixedPoint::default(), vec![], vec![]);
        let shape = [rows.len(), columns];
        let input = RingTensor::new(shape.to_vec(), data).unwrap();
        let shared = protocol.input(&shape, Some(&input)).unwrap();
        let label = argmax_rows(&mut protocol, &shared, &shape, 40).unwrap();
        protocol
            .reveal_to_client(&label)
            .unwrap()
            .unwrap()
            .data()
            .to_vec()
    }

    /// Ties go to the lowest index among the maxima, as `veil_model::plain::argmax_rows`
    /// gives, for every position of the tie (the review's [1, 5, 5, 1] gave 2).
    #[test]
    fn ties_break_as_the_plain_argmax_breaks_them() {
        let rows: Vec<Vec<i64>> = vec![
            vec![1, 5, 5, 1],
            vec![5, 1, 1, 5],
            vec![0, 0, 0, 0],
            vec![-3, 7, -3, 7],
            vec![2, 2, 9, 9],
            vec![-1, -8, -1, -8],
        ];
        let borrowed: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
        let secure = labels(&borrowed);
        for (row, label) in rows.iter().zip(&secure) {
            let plain: Vec<f32> = row.iter().map(|&v| v as f32).collect();
            assert_eq!(
                veil_model::plain::argmax_rows(&plain, row.len())[0] as u64,
                *label,
                "{row:?}"
            );
        }
        // Odd widths carry the unpaired column through in order.
        for width in [3usize, 5, 7] {
            let row: Vec<i64> = (0..width).map(|c| if c % 2 == 0 { 4 } else { 1 }).collect();
            assert_eq!(labels(&[&row]), vec![0], "{row:?}");
            let row: Vec<i64> = (0..width).map(|c| i64::from(c + 1 == width) * 6).collect();
            assert_eq!(labels(&[&row]), vec![width as u64 - 1], "{row:?}");
        }
    }
}
