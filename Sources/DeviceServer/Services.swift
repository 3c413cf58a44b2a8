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
    try await answer {
      let root = try await core.vaultCall(token: token(request.metadata), "GetRootState") { try await $0.rootState() }
      var response = Custos_Vault_V1_GetRootStateResponse()
      response.root = root.message
      return response
    }
  }

  func createWallet(
    request: ServerRequest<Custos_Vault_V1_CreateWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer {
      let call = try VaultCall(request.message)
      return try await core.vaultCall(token: token(request.metadata), "CreateWallet") {
        try await $0.createWallet(call)
      }.message
    }
  }

  func updateWallet(
    request: ServerRequest<Custos_Vault_V1_UpdateWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer {
      let call = try VaultCall(request.message)
      return try await core.vaultCall(token: token(request.metadata), "UpdateWallet") {
        try await $0.updateWallet(call)
      }.message
    }
  }

  func removeWallet(
    request: ServerRequest<Custos_Vault_V1_RemoveWalletRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer {
      let call = try VaultCall(request.message)
      return try await core.vaultCall(token: token(request.metadata), "RemoveWallet") {
        try await $0.removeWallet(call)
      }.message
    }
  }

  func sign(
    request: ServerRequest<Custos_Vault_V1_SignRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_VaultResult> {
    try await answer {
      let call = try VaultCall(request.message)
      return try await core.vaultCall(token: token(request.metadata), "Sign") { try await $0.sign(call) }.message
    }
  }

  func getPublicKey(
    request: ServerRequest<Custos_Vault_V1_GetPublicKeyRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_GetPublicKeyResponse> {
    try await answer {
      let query = try PublicKeyQuery(request.message)
      return try await core.vaultCall(token: token(request.metadata), "GetPublicKey") {
        try await $0.publicKey(query)
      }.message
    }
  }
}

extension VaultService {
  func getResult(
    request: ServerRequest<Custos_Vault_V1_GetResultRequest>, context: ServerContext
  ) async throws -> ServerResponse<Custos_Vault_V1_GetResultResponse> {
    try await answer {
      guard let hash = Hash256(request.message.envelopeHash) else {
        throw VaultWireError(.invalidArgument, "an envelope hash has 32 bytes")
      }
      let outcome = try await core.vaultCall(token: token(request.metadata), "GetResult") {
        try await $0.result(envelopeHash: hash)
      }
      var response = Custos_Vault_V1_GetResultResponse()
      if let outcome {
        response.found = true
        response.result = outcome.message
      }
      return response
    }
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
