//! The protobuf codec of every lnrs.v1 service (build.rs names it as the generated code's
//! `codec_path`): tonic-prost's encoder, and a decoder that answers a message that does not
//! decode — invalid UTF-8 in a string, a truncated message, a wrong wire type — with
//! INVALID_ARGUMENT `MALFORMED_REQUEST` through [`crate::error`], where tonic-prost answers
//! INTERNAL (which would blame the server for the client's bytes).
//!
//! The generated clients use the same codec, so a client that cannot decode a *response*
//! gets the same status; between this server and its own clients that would mean mismatched
//! protos, and the message says which field failed.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::error::Error;

/// [`ProstCodec`] with decode errors mapped by [`crate::error`].
#[derive(Debug, Clone)]
pub struct LnrsCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for LnrsCodec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for LnrsCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = LnrsDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LnrsDecoder(PhantomData)
    }
}

/// Decodes `U` with prost; a failure is [`Error::MalformedMessage`].
#[derive(Debug, Clone, Default)]
pub struct LnrsDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for LnrsDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_message(buf).map(Some)
    }
}

/// One message of type `U` from `buf`.
fn decode_message<U: Message + Default>(buf: impl prost::bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|e| Error::MalformedMessage(e.to_string()).into())
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::pb;

    fn decode<U: Message + Default>(raw: &[u8]) -> Result<U, Status> {
        decode_message(raw)
    }

    #[test]
    fn well_formed_messages_decode() {
        let m = pb::CreateHabitatRequest {
            habitat: Some(pb::Habitat {
                habitat_id: 0,
                habitat: "Fen ✓".into(),
            }),
            request_id: "r1".into(),
        };
        let got: pb::CreateHabitatRequest = decode(&m.encode_to_vec()).unwrap();
        assert_eq!(got, m);
    }

    #[test]
    fn malformed_messages_are_invalid_argument_with_a_reason() {
        let invalid_utf8 = [0x12, 0x02, 0xff, 0xfe]; // request_id (2) = bytes ff fe
        let truncated = [0x12, 0x05, b'a']; // length 5, one byte present
        let wrong_wire_type = [0x10, 0x01]; // request_id as a varint
        let bad_varint = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        for raw in [
            &invalid_utf8[..],
            &truncated[..],
            &wrong_wire_type[..],
            &bad_varint[..],
        ] {
            let s = decode::<pb::CreateHabitatRequest>(raw).unwrap_err();
            assert_eq!(s.code(), Code::InvalidArgument, "{raw:?}: {s:?}");
            let info = s
                .get_error_details()
                .error_info()
                .cloned()
                .expect("ErrorInfo");
            assert_eq!(info.reason, "MALFORMED_REQUEST");
            assert_eq!(info.domain, crate::error::ERROR_DOMAIN);
        }
    }
}
