//! A minimal PNG writer for 8-bit greyscale images (the leakage grid): signature, IHDR,
//! one zlib IDAT with filter 0 on every row, IEND, each chunk with its CRC-32.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

/// The PNG file of a `width × height` greyscale image (`pixels` row-major, in `[0, 1]`,
/// clamped).
pub fn encode_greyscale(width: usize, height: usize, pixels: &[f32]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(height * (width + 1));
    for row in 0..height {
        raw.push(0); // filter: none
        for column in 0..width {
            let value = pixels.get(row * width + column).copied().unwrap_or(0.0);
            raw.push((value.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let compressed = encoder
        .write_all(&raw)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    let mut file = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&(width as u32).to_be_bytes());
    header.extend_from_slice(&(height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit, greyscale, deflate, filter 0, no interlace
    chunk(&mut file, b"IHDR", &header);
    chunk(&mut file, b"IDAT", &compressed);
    chunk(&mut file, b"IEND", &[]);
    file
}

fn chunk(file: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    file.extend_from_slice(&(data.len() as u32).to_be_bytes());
    file.extend_from_slice(kind);
    file.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    file.extend_from_slice(&crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_has_the_png_structure_and_the_pixels_inflate_back() {
        let pixels = [0.0, 0.5, 1.0, 0.25, 2.0, -1.0];
        let file = encode_greyscale(3, 2, &pixels);
        assert_eq!(&file[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&file[12..16], b"IHDR");
        assert_eq!(
            u32::from_be_bytes([file[16], file[17], file[18], file[19]]),
            3
        );
        // The IHDR CRC covers "IHDR" and its 13 bytes.
        let mut crc = flate2::Crc::new();
        crc.update(&file[12..29]);
        assert_eq!(crc.sum().to_be_bytes(), file[29..33]);
        let length = u32::from_be_bytes([file[33], file[34], file[35], file[36]]) as usize;
        assert_eq!(&file[37..41], b"IDAT");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::ZlibDecoder::new(&file[41..41 + length]),
            &mut raw,
        )
        .expect("inflates");
        assert_eq!(raw, vec![0, 0, 128, 255, 0, 64, 255, 0]);
        assert_eq!(&file[file.len() - 8..file.len() - 4], b"IEND");
    }
}
