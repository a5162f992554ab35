//! Files over gRPC streams: uploads received into a staged file (the first message may carry
//! options; a client that cancels or breaks the stream leaves nothing behind, because the
//! staged file removes itself when dropped), and staged files streamed back in chunks from a
//! blocking thread through a small channel (bounded memory: at most a few chunks in flight).

use std::path::Path;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::app::App;
use crate::dataio::{StagedFile, Upload};
use crate::error::Error;

/// Largest `data` chunk a download sends.
pub const CHUNK: usize = 1 << 20;
/// Chunks buffered between the reading thread and the client.
const IN_FLIGHT: usize = 4;

/// A server stream fed by a blocking producer.
pub type FileStream<T> = ReceiverStream<Result<T, Status>>;

/// Receives an upload: `data_of` splits each message into its bytes (and, on the first one,
/// whatever options it carries, returned by `first`).
pub async fn receive<M, O>(
    app: &App,
    what: &str,
    mut stream: Streaming<M>,
    first: impl FnOnce(&M) -> Result<(O, Option<u64>), Error>,
    data_of: impl Fn(M) -> Vec<u8>,
) -> Result<(O, StagedFile), Error> {
    let broken =
        |s: Status| Error::MalformedMessage(format!("the upload stream broke: {}", s.message()));
    let Some(msg) = stream.message().await.map_err(broken)? else {
        return Err(crate::dataio::DataIoError::UploadOptionsMissing.into());
    };
    let (options, declared) = first(&msg)?;
    let mut upload: Upload = app.begin_upload(what, declared)?;
    upload.write(&data_of(msg))?;
    while let Some(msg) = stream.message().await.map_err(broken)? {
        upload.write(&data_of(msg))?;
    }
    Ok((options, upload.finish()?))
}

/// Streams `file` to the client as messages made by `wrap(offset, bytes)`; `last` makes the
/// final message (after every chunk), if any. Runs the reads on a blocking thread.
pub fn send<T: Send + 'static>(
    file: StagedFile,
    wrap: impl Fn(u64, Vec<u8>) -> T + Send + 'static,
    last: Option<T>,
) -> FileStream<T> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let sent = send_blocking(&tx, file.path(), &wrap);
        match sent {
            Ok(true) => {
                if let Some(m) = last {
                    let _ = tx.blocking_send(Ok(m));
                }
            }
            Ok(false) => {} // the client went away
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::from(Error::from(
                    crate::dataio::DataIoError::Io(e),
                ))));
            }
        }
        drop(file);
    });
    ReceiverStream::new(rx)
}

/// Sends the file's bytes in chunks; false when the receiver is gone.
pub fn send_blocking<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    path: &Path,
    wrap: &impl Fn(u64, Vec<u8>) -> T,
) -> std::io::Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut offset = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(true);
        }
        buf.truncate(n);
        if tx.blocking_send(Ok(wrap(offset, buf))).is_err() {
            return Ok(false);
        }
        offset += n as u64;
    }
}
