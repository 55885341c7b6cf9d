/// The error for a handshake message of the wrong type (an `Error` frame is the other side's
/// refusal).
async fn unexpected<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, PeerCodec>,
    expected: &str,
    got: PeerMessage,
) -> PeerError {
    match got {
        PeerMessage::Error { code, message } => PeerError::RefusedByPeer { code, message },
        other => {
            let reason = format!("expected {expected}, got {}", other.type_name());
            refuse(framed, ErrorCode::BadRequest, reason).await
        }
    }
}
