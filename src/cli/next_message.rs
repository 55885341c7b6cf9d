/// Reads the next handshake message; a bad frame is refused with `BadRequest`.
async fn next_message<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
) -> Result<PeerMessage, PeerError> {
    match framed.next().await {
        None => Err(PeerError::Closed),
        Some(Err(error)) => Err(PeerError::Codec(error)),
        Some(Ok(Err(bad_frame))) => {
            Err(refuse(framed, ErrorCode::BadRequest, bad_frame.to_string()).await)
        }
        Some(Ok(Ok(message))) => Ok(message),
    }
}
