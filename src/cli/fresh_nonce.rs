fn fresh_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; PEER_NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}
