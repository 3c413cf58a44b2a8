import Custody
import Foundation
import GRPCCore
import VaultWire

/// The `custos.vault.v1.Vault` service: the Crypto User's calls. Every call but Login and
/// Status needs a session; the vault calls also need a READY device.
struct VaultService: Custos_Vault_V1_Vault.ServiceProtocol {
  let core: DeviceCore

  func login(
    request: ServerRequest<Custos_Vault_V1_LoginRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_LoginResponse> {
    try await answer {
      let credential = SecretBytes(request.message.credential)
      let (token, expiresAt) = try await core.login(credential: credential)
      var response = Custos_Vault_V1_LoginResponse()
      response.sessionToken = token
      response.expiresAtUnixMs = Int64(expiresAt.timeIntervalSince1970 * 1000)
      response.idleTimeoutSeconds = UInt32(clamping: core.sessions.idleTimeout.components.seconds)
      return response
    }
  }

  func logout(
    request: ServerRequest<Custos_Vault_V1_LogoutRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_LogoutResponse> {
    try await answer {
      try core.logout(token: token(request.metadata))
      return Custos_Vault_V1_LogoutResponse()
    }
  }

  func status(
    request: ServerRequest<Custos_Vault_V1_StatusRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_StatusResponse> {
    ServerResponse(message: await core.status().message)
  }

  func getRootState(
    request: ServerRequest<Custos_Vault_V1_GetRootStateRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_GetRootStateResponse> {
    try await answer { try await rootState(token: token(request.metadata)) }
  }

  func createWallet(
    request: ServerRequest<Custos_Vault_V1_CreateWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer { try await createWallet(request.message, token: token(request.metadata)) }
  }

  func updateWallet(
    request: ServerRequest<Custos_Vault_V1_UpdateWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer { try await updateWallet(request.message, token: token(request.metadata)) }
  }

  func removeWallet(
    request: ServerRequest<Custos_Vault_V1_RemoveWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer { try await removeWallet(request.message, token: token(request.metadata)) }
  }

  func sign(
    request: ServerRequest<Custos_Vault_V1_SignRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer { try await sign(request.message, token: token(request.metadata)) }
  }

  func getPublicKey(
    request: ServerRequest<Custos_Vault_V1_GetPublicKeyRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_GetPublicKeyResponse> {
    try await answer { try await publicKey(request.message, token: token(request.metadata)) }
  }

  func getResult(
    request: ServerRequest<Custos_Vault_V1_GetResultRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_GetResultResponse> {
    try await answer { try await result(request.message, token: token(request.metadata)) }
  }

  /// Opens a Pipeline stream for the session its metadata names, then answers each call on it
  /// (concurrently, in the order they finish) until the client closes its side or the device
  /// begins stopping; either way every call read is answered before the stream ends.
  func pipeline(
    request: StreamingServerRequest<Custos_Vault_V1_PipelineCall>, context: ServerContext
  ) async throws -> StreamingServerResponse<Custos_Vault_V1_PipelineReply> {
    let token = token(request.metadata)
    do {
      try core.checkSession(token: token)
    } catch {
      throw error.rpcError
    }
    return StreamingServerResponse { writer in
      try await servePipeline(request.messages, writer: writer, token: token)
      return [:]
    }
  }
}

// MARK: The calls, shared by the single RPCs and the Pipeline stream

extension VaultService {
  func rootState(token: String?) async throws -> Custos_Vault_V1_GetRootStateResponse {
    let root = try await core.vaultCall(token: token, "GetRootState") { try await $0.rootState() }
    var response = Custos_Vault_V1_GetRootStateResponse()
    response.root = root.message
    return response
  }

  func createWallet(
    _ message: Custos_Vault_V1_CreateWalletRequest, token: String?
  ) async throws -> Custos_Vault_V1_VaultResult {
    try await change("CreateWallet", VaultCall(message), token) { try await $0.createWallet($1) }
  }

  func updateWallet(
    _ message: Custos_Vault_V1_UpdateWalletRequest, token: String?
  ) async throws -> Custos_Vault_V1_VaultResult {
    try await change("UpdateWallet", VaultCall(message), token) { try await $0.updateWallet($1) }
  }

  func removeWallet(
    _ message: Custos_Vault_V1_RemoveWalletRequest, token: String?
  ) async throws -> Custos_Vault_V1_VaultResult {
    try await change("RemoveWallet", VaultCall(message), token) { try await $0.removeWallet($1) }
  }

  func sign(_ message: Custos_Vault_V1_SignRequest, token: String?) async throws -> Custos_Vault_V1_VaultResult {
    try await change("Sign", VaultCall(message), token) { try await $0.sign($1) }
  }

  /// A create, update, remove or sign: the call the request decoded to, run by the vault.
  private func change(
    _ name: String, _ call: VaultCall, _ token: String?,
    _ body: (any VaultBackend, VaultCall) async throws -> VaultOutcome
  ) async throws -> Custos_Vault_V1_VaultResult {
    try await core.vaultCall(token: token, name) { try await body($0, call) }.message
  }

  func publicKey(
    _ message: Custos_Vault_V1_GetPublicKeyRequest, token: String?
  ) async throws -> Custos_Vault_V1_GetPublicKeyResponse {
    let query = try PublicKeyQuery(message)
    return try await core.vaultCall(token: token, "GetPublicKey") { try await $0.publicKey(query) }.message
  }

  func result(
    _ message: Custos_Vault_V1_GetResultRequest, token: String?
  ) async throws
    -> Custos_Vault_V1_GetResultResponse
  {
    // The session is checked before the request is read.
    let outcome = try await core.vaultCall(token: token, "GetResult") { backend in
      guard let hash = Hash256(message.envelopeHash) else {
        throw VaultWireError(.invalidArgument, "an envelope hash has 32 bytes, not \(message.envelopeHash.count)")
      }
      return try await backend.result(envelopeHash: hash)
    }
    var response = Custos_Vault_V1_GetResultResponse()
    if let outcome {
      response.found = true
      response.result = outcome.message
    }
    return response
  }

  /// One Pipeline call's answer: what the single call answers, or its refusal.
  func reply(to call: Custos_Vault_V1_PipelineCall, token: String?) async -> Custos_Vault_V1_PipelineReply {
    var reply = Custos_Vault_V1_PipelineReply()
    reply.id = call.id
    do {
      switch call.call {
      case .getRootState: reply.rootState = try await rootState(token: token)
      case .createWallet(let message): reply.vaultResult = try await createWallet(message, token: token)
      case .updateWallet(let message): reply.vaultResult = try await updateWallet(message, token: token)
      case .removeWallet(let message): reply.vaultResult = try await removeWallet(message, token: token)
      case .sign(let message): reply.vaultResult = try await sign(message, token: token)
      case .getPublicKey(let message): reply.publicKey = try await publicKey(message, token: token)
      case .getResult(let message): reply.result = try await result(message, token: token)
      case nil: throw VaultWireError(.invalidArgument, "pipeline call \(call.id) names no call")
      }
    } catch {
      reply.refusal = VaultWireError(vault: error).refusal
    }
    return reply
  }

  /// Reads calls and answers each as it finishes. The reading stops when the client closes its
  /// side or when the device begins stopping (the reader is cancelled, so the stream ends even
  /// while the client keeps it open); the calls read by then are all answered first.
  private func servePipeline(
    _ calls: RPCAsyncSequence<Custos_Vault_V1_PipelineCall, any Error>,
    writer: RPCWriter<Custos_Vault_V1_PipelineReply>, token: String?
  ) async throws {
    let (inbox, deliver) = AsyncStream.makeStream(of: Custos_Vault_V1_PipelineCall.self)
    let (outbox, post) = AsyncStream.makeStream(of: Custos_Vault_V1_PipelineReply.self)
    let reader = Task {
      do {
        for try await call in calls { deliver.yield(call) }
      } catch {
        // The client went away or the reading was cancelled: answer what was read.
      }
      deliver.finish()
    }
    let core = self.core
    let stopWatch = Task {
      await core.untilStopping()
      reader.cancel()
    }
    defer {
      stopWatch.cancel()
      reader.cancel()
    }
    async let written: Void = {
      for await reply in outbox { try await writer.write(reply) }
    }()
    await withDiscardingTaskGroup { group in
      for await call in inbox {
        group.addTask { post.yield(await reply(to: call, token: token)) }
      }
    }
    post.finish()
    try await written
  }
}

/// The `custos.vault.v1.Operator` service: unseal and status, for the unseal key holders and the
/// infrastructure operator. Needs no session.
struct OperatorService: Custos_Vault_V1_Operator.ServiceProtocol {
  let core: DeviceCore

  func unseal(
    request: ServerRequest<Custos_Vault_V1_UnsealRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_UnsealResponse> {
    try await answer {
      let password = SecretBytes(request.message.password)
      let (state, progress) = try await core.unseal(
        shareFile: Array(request.message.shareFile), password: password, reset: request.message.reset)
      var response = Custos_Vault_V1_UnsealResponse()
      response.state = state.message
      response.progress = progress.message
      return response
    }
  }

  func status(
    request: ServerRequest<Custos_Vault_V1_StatusRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_StatusResponse> {
    ServerResponse(message: await core.status().message)
  }
}

/// The session token of a call's metadata.
private func token(_ metadata: Metadata) -> String? {
  metadata[stringValues: WireMetadata.session].first { _ in true }
}

/// Runs a handler and answers with its message, or with its refusal as a gRPC status whose
/// trailers carry the reason.
private func answer<Message: Sendable>(
  _ body: () async throws -> Message
) async throws -> ServerResponse<Message> {
  do {
    return ServerResponse(message: try await body())
  } catch {
    throw VaultWireError(vault: error).rpcError
  }
}
