/// Tells the other side why it is refused (best effort; the caller's deadline bounds it) and
/// returns the matching error.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    code: ErrorCode,
    reason: String,
) -> PeerError {
    let _ = framed.send(PeerMessage::error(code, reason.clone())).await;
    PeerError::Refused { code, reason }
}
