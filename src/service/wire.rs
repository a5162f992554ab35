//! Responses sent as protobuf bytes encoded earlier: the type the generated servers use for
//! the six entity List responses (build.rs maps `ListMeasuresResponse` and its siblings to
//! [`Encoded`] in the server code only; clients keep the generated messages). A list page is
//! read from the cache many times, and converting its records and encoding ~16 KB per request
//! was most of a cached ListMeasures' cost on the server; the handler encodes a page once and
//! keeps the bytes with the page ([`crate::domain::query::Rendered`]). The bytes are exactly the
//! generated message's encoding, so nothing on the wire changes.

use prost::bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{decode_varint, encode_key, encode_varint, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// One message, already encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl Encoded {
    /// `m`'s encoding.
    pub fn of(m: &impl Message) -> Self {
        Self(m.encode_to_vec().into())
    }
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Keeps each field's bytes as they came, so decoding and encoding again is the identity
    /// (the server never decodes one; this keeps the type an honest `Message`).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut raw = BytesMut::from(&self.0[..]);
        encode_key(tag, wire_type, &mut raw);
        match wire_type {
            WireType::Varint => encode_varint(decode_varint(buf)?, &mut raw),
            WireType::ThirtyTwoBit => copy(buf, 4, &mut raw)?,
            WireType::SixtyFourBit => copy(buf, 8, &mut raw)?,
            WireType::LengthDelimited => {
                let len = decode_varint(buf)?;
                encode_varint(len, &mut raw);
                copy(buf, usize::try_from(len).unwrap_or(usize::MAX), &mut raw)?;
            }
            // Groups are proto2's; lnrs.v1 has none. prost's own skipping reports the error.
            WireType::StartGroup | WireType::EndGroup => {
                prost::encoding::skip_field(wire_type, tag, buf, ctx)?
            }
        }
        self.0 = raw.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Moves `len` bytes from `buf` to `raw`.
fn copy(buf: &mut impl Buf, len: usize, raw: &mut BytesMut) -> Result<(), DecodeError> {
    if buf.remaining() < len {
        // prost has no other constructor for a hand-written Message's errors (its own
        // message for this case is the same).
        #[allow(deprecated)]
        return Err(DecodeError::new("buffer underflow"));
    }
    raw.put(buf.take(len));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn page() -> pb::ListMeasuresResponse {
        let measure = |id: i32, name: &str| pb::Measure {
            measure_id: id,
            measure: name.into(),
            core_supplementary: "Core (BNG)".into(),
            mapped_unmapped: Some("Mapped".into()),
            link_to_further_guidance: None,
            measure_type_ids: vec![1, 3],
            benefit_ids: vec![2],
            ..Default::default()
        };
        pb::ListMeasuresResponse {
            measures: vec![measure(7, "Restore fen ✓"), measure(300, "")],
            next_page_token: "7b2271223a".into(),
            total_size: 168,
        }
    }

    #[test]
    fn an_encoded_message_is_the_messages_own_encoding() {
        let m = page();
        let e = Encoded::of(&m);
        assert_eq!(e.encoded_len(), m.encoded_len());
        assert_eq!(e.encode_to_vec(), m.encode_to_vec());
        assert_eq!(
            e.encode_length_delimited_to_vec(),
            m.encode_length_delimited_to_vec()
        );
        let back = pb::ListMeasuresResponse::decode(&e.encode_to_vec()[..]).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn decoding_keeps_every_field_as_it_came() {
        let mut raw = page().encode_to_vec();
        // Fields the message does not have, of the two fixed-width wire types.
        encode_key(90, WireType::ThirtyTwoBit, &mut raw);
        raw.extend_from_slice(&7u32.to_le_bytes());
        encode_key(91, WireType::SixtyFourBit, &mut raw);
        raw.extend_from_slice(&9u64.to_le_bytes());
        let e = Encoded::decode(&raw[..]).unwrap();
        assert_eq!(&e.0[..], &raw[..]);
        assert_eq!(e.encode_to_vec(), raw);
        for cut in [1, 5, 12] {
            assert!(
                Encoded::decode(&raw[..raw.len() - cut]).is_err(),
                "cut {cut}"
            );
        }
    }
}
