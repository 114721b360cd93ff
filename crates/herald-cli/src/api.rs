//! What every command that calls a Herald gRPC API shares: the bearer
//! token on each request, and a refusal said as its code and message.

/// Adds `authorization: Bearer <token>` to `request`, when there is a token.
pub(crate) fn authorize<T>(
    request: &mut tonic::Request<T>,
    token: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(())
}

/// A failed call as the error the command ends with: `<Code>: <message>`.
pub(crate) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
