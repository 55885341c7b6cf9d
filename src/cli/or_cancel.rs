/// Returns `future`'s output, or `Cancelled` when `cancel` fires first.
async fn or_cancel<T>(
    cancel: &CancellationToken,
    future: impl Future<Output = Result<T, PeerError>>,
) -> Result<T, PeerError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(PeerError::Cancelled),
        result = future => result,
    }
}
