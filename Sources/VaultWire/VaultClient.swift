import Custody
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Synchronization

/// Where a device listens.
public enum DeviceEndpoint: Sendable, Hashable, CustomStringConvertible {
  /// A Unix domain socket on this machine (created 0600 by custos-hsm).
  case unixSocket(path: String)
  /// TCP with TLS, for a remote device: the device's certificate must chain to `trustRoots` (a
  /// PEM file) and name `serverName` (default: `host`).
  case tls(host: String, port: Int, trustRoots: String, serverName: String? = nil)

  public var description: String {
    switch self {
    case .unixSocket(let path): "unix:\(path)"
    case .tls(let host, let port, _, _): "tls:\(host):\(port)"
    }
  }
}

/// The client a custody server (and the `custos` tool) uses to reach one device: a connection
/// to its socket, the Crypto User's session calls, the operators' unseal and status, and typed
/// errors (`VaultWireError`) for every refusal.
///
/// One client holds one HTTP/2 connection and may be used from many tasks at once. Call
/// `close()` when done.
public final class VaultClient: Sendable {
  /// How the session calls (GetRootState to GetResult) travel.
  public enum SessionCalls: String, Sendable, CaseIterable {
    /// On one long-lived Pipeline stream per session, many calls in flight on it at once:
    /// no HTTP/2 stream set-up, headers or trailers per call.
    case pipelined
    /// One gRPC call (one HTTP/2 stream) each.
    case unary
  }

  public let endpoint: DeviceEndpoint
  /// Deadline of each call.
  public let timeout: Duration
  public let sessionCalls: SessionCalls
  /// The open Pipeline streams, by session token.
  private let pipelines = Mutex<[String: SessionPipeline]>([:])
  private let grpc: GRPCClient<HTTP2ClientTransport.Posix>
  private let connections: Task<Void, Never>
  private let vault: Custos_Vault_V1_Vault.Client<HTTP2ClientTransport.Posix>
  private let operatorService: Custos_Vault_V1_Operator.Client<HTTP2ClientTransport.Posix>

  /// Connects to a device. A socket path with nothing listening fails here with `unreachable`;
  /// a TCP connection is tried at the first call.
  public init(
    endpoint: DeviceEndpoint, timeout: Duration = .seconds(30), sessionCalls: SessionCalls = .pipelined
  ) throws(VaultWireError) {
    let transport: HTTP2ClientTransport.Posix
    do {
      switch endpoint {
      case .unixSocket(let path):
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else {
          throw VaultWireError(.unreachable, "no device socket at \(path)")
        }
        transport = try HTTP2ClientTransport.Posix(
          target: .unixDomainSocket(path: path), transportSecurity: .plaintext)
      case .tls(let host, let port, let trustRoots, let serverName):
        guard FileManager.default.isReadableFile(atPath: trustRoots) else {
          throw VaultWireError(.invalidArgument, "cannot read the trust roots \(trustRoots)")
        }
        transport = try HTTP2ClientTransport.Posix(
          target: .dns(host: host, port: port),
          transportSecurity: .tls { tls in
            tls.trustRoots = .certificates([.file(path: trustRoots, format: .pem)])
            tls.serverCertificateVerification = .fullVerification
          },
          config: .defaults { config in config.http2.authority = serverName ?? host })
      }
    } catch let error as VaultWireError {
      throw error
    } catch {
      throw VaultWireError(.unreachable, "cannot set up a connection to \(endpoint): \(error)")
    }
    let grpc = GRPCClient(transport: transport)
    self.endpoint = endpoint
    self.timeout = timeout
    self.sessionCalls = sessionCalls
    self.grpc = grpc
    self.vault = Custos_Vault_V1_Vault.Client(wrapping: grpc)
    self.operatorService = Custos_Vault_V1_Operator.Client(wrapping: grpc)
    self.connections = Task { try? await grpc.runConnections() }
  }

  /// Closes the connection once the calls in flight have finished.
  public func close() async {
    let open = pipelines.withLock { pipelines in
      defer { pipelines = [:] }
      return Array(pipelines.values)
    }
    for pipeline in open { await pipeline.close() }
    grpc.beginGracefulShutdown()
    await connections.value
  }

  // MARK: Anyone on the socket

  /// The device's state, unseal progress, lockouts and (when READY) root state.
  public func status() async throws(VaultWireError) -> DeviceStatus {
    let message = try await call { vault, options in
      try await vault.status(Custos_Vault_V1_StatusRequest(), options: options)
    }
    return try DeviceStatus(message)
  }

  /// Opens a Crypto User session with the credential enrolled at the init-device ceremony.
  public func login(credential: SecretBytes) async throws(VaultWireError) -> VaultSession {
    var request = Custos_Vault_V1_LoginRequest()
    request.credential = credential.withUnsafeBytes { Data($0) }
    let message = try await call { [request] vault, options in try await vault.login(request, options: options) }
    guard !message.sessionToken.isEmpty else {
      throw VaultWireError(.unexpected, "the device opened a session without a token")
    }
    return VaultSession(
      token: SecretBytes(utf8: message.sessionToken),
      expiresAt: Date(timeIntervalSince1970: Double(message.expiresAtUnixMs) / 1000),
      idleTimeout: .seconds(Int64(message.idleTimeoutSeconds)))
  }

  // MARK: Unseal key holders

  /// Submits one holder's share file and password; the device answers with its progress.
  /// `reset` first discards the shares accepted so far (with an empty file: only that).
  public func unseal(
    shareFile: [UInt8], password: SecretBytes, reset: Bool = false
  ) async throws(VaultWireError) -> (state: DeviceState, progress: UnsealStatus) {
    var request = Custos_Vault_V1_UnsealRequest()
    request.shareFile = Data(shareFile)
    request.password = password.withUnsafeBytes { Data($0) }
    request.reset = reset
    let message = try await callOperator { [request] service, options in
      try await service.unseal(request, options: options)
    }
    guard let state = DeviceState(message.state) else {
      throw VaultWireError(.unexpected, "the device reported state \(message.state.rawValue)")
    }
    return (state, UnsealStatus(message.progress))
  }

  /// The status, through the Operator service.
  public func operatorStatus() async throws(VaultWireError) -> DeviceStatus {
    let message = try await callOperator { service, options in
      try await service.status(Custos_Vault_V1_StatusRequest(), options: options)
    }
    return try DeviceStatus(message)
  }

  // MARK: Crypto User session calls

  /// Closes the session (and its Pipeline stream, once the calls in flight on it are answered).
  public func logout(_ session: VaultSession) async throws(VaultWireError) {
    let token = Self.tokenText(session)
    if let pipeline = pipelines.withLock({ $0.removeValue(forKey: token) }) { await pipeline.close() }
    _ = try await call(session) { vault, metadata, options in
      try await vault.logout(Custos_Vault_V1_LogoutRequest(), metadata: metadata, options: options)
    }
  }

  /// The committed root state.
  public func rootState(_ session: VaultSession) async throws(VaultWireError) -> RootState {
    let request = Custos_Vault_V1_GetRootStateRequest()
    let message = try await sessionCall(session, .getRootState(request), \.rootState) { vault, metadata, options in
      try await vault.getRootState(request, metadata: metadata, options: options)
    }
    guard message.hasRoot else { throw VaultWireError(.unexpected, "the device answered without a root state") }
    return try RootState(wire: message.root)
  }

  /// Creates a wallet under the envelope's approvals.
  public func createWallet(_ request: VaultCall, session: VaultSession) async throws(VaultWireError) -> VaultOutcome {
    let message = request.createMessage
    return try VaultOutcome(
      try await sessionCall(session, .createWallet(message), \.vaultResult) { vault, metadata, options in
        try await vault.createWallet(message, metadata: metadata, options: options)
      })
  }

  /// Changes a wallet's data under the envelope's approvals.
  public func updateWallet(_ request: VaultCall, session: VaultSession) async throws(VaultWireError) -> VaultOutcome {
    let message = request.updateMessage
    return try VaultOutcome(
      try await sessionCall(session, .updateWallet(message), \.vaultResult) { vault, metadata, options in
        try await vault.updateWallet(message, metadata: metadata, options: options)
      })
  }

  /// Removes a wallet under the envelope's approvals.
  public func removeWallet(_ request: VaultCall, session: VaultSession) async throws(VaultWireError) -> VaultOutcome {
    let message = request.removeMessage
    return try VaultOutcome(
      try await sessionCall(session, .removeWallet(message), \.vaultResult) { vault, metadata, options in
        try await vault.removeWallet(message, metadata: metadata, options: options)
      })
  }

  /// Signs what the envelope describes, under its approvals and the wallet's policy.
  public func sign(_ request: VaultCall, session: VaultSession) async throws(VaultWireError) -> VaultOutcome {
    let message = request.signMessage
    return try VaultOutcome(
      try await sessionCall(session, .sign(message), \.vaultResult) { vault, metadata, options in
        try await vault.sign(message, metadata: metadata, options: options)
      })
  }

  /// The public key (and address) at a path of a wallet.
  public func publicKey(_ query: PublicKeyQuery, session: VaultSession) async throws(VaultWireError) -> PublicKeyInfo {
    let message = query.message
    return PublicKeyInfo(
      try await sessionCall(session, .getPublicKey(message), \.publicKey) { vault, metadata, options in
        try await vault.getPublicKey(message, metadata: metadata, options: options)
      })
  }

  /// The result of a request the device process applied, by the SHA-256 of its envelope; nil
  /// when the device holds none.
  public func result(envelopeHash: Hash256, session: VaultSession) async throws(VaultWireError) -> VaultOutcome? {
    var request = Custos_Vault_V1_GetResultRequest()
    request.envelopeHash = Data(envelopeHash.bytes)
    let message = try await sessionCall(session, .getResult(request), \.result) { [request] vault, metadata, options in
      try await vault.getResult(request, metadata: metadata, options: options)
    }
    guard message.found else { return nil }
    return try VaultOutcome(message.result)
  }

  // MARK: Probing (the lockdown audit's second layer)

  /// Calls `method` of `service` with `body` as the raw request bytes, with or without a
  /// session, and returns how the device answered: nil when it accepted the call, the refusal
  /// otherwise. Lets an auditor try methods and services the contract does not have.
  public func probe(
    service: String, method: String, body: [UInt8] = [], session: VaultSession? = nil
  ) async -> VaultWireError? {
    var metadata = Metadata()
    if let session { metadata.addString(Self.tokenText(session), forKey: WireMetadata.session) }
    do {
      _ = try await perform {
        try await grpc.unary(
          request: ClientRequest(message: body, metadata: metadata),
          descriptor: MethodDescriptor(fullyQualifiedService: service, method: method),
          serializer: RawBytesCoder(), deserializer: RawBytesCoder(), options: options
        ) { response in try response.message }
      }
      return nil
    } catch {
      return error
    }
  }

  // MARK: Calls

  private var options: CallOptions {
    var options = CallOptions.defaults
    options.timeout = timeout
    return options
  }

  private static func tokenText(_ session: VaultSession) -> String {
    session.token.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
  }

  /// Runs a call; any failure becomes the `VaultWireError` it stands for.
  private func perform<Response>(_ body: () async throws -> Response) async throws(VaultWireError) -> Response {
    do {
      return try await body()
    } catch {
      throw VaultWireError.from(error)
    }
  }

  private func call<Response: Sendable>(
    _ body: (Custos_Vault_V1_Vault.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> Response
  ) async throws(VaultWireError) -> Response {
    try await perform { try await body(vault, options) }
  }

  private func call<Response: Sendable>(
    _ session: VaultSession,
    _ body: (Custos_Vault_V1_Vault.Client<HTTP2ClientTransport.Posix>, Metadata, CallOptions) async throws -> Response
  ) async throws(VaultWireError) -> Response {
    var metadata = Metadata()
    metadata.addString(Self.tokenText(session), forKey: WireMetadata.session)
    return try await perform { try await body(vault, metadata, options) }
  }

  /// A session call, on the session's Pipeline stream or as a single call (`sessionCalls`).
  /// `answer` picks the reply's response out of a Pipeline reply.
  private func sessionCall<Response: Sendable>(
    _ session: VaultSession, _ pipelined: SessionPipeline.Call,
    _ answer: KeyPath<SessionPipeline.Reply, Response?>,
    unary: (Custos_Vault_V1_Vault.Client<HTTP2ClientTransport.Posix>, Metadata, CallOptions) async throws -> Response
  ) async throws(VaultWireError) -> Response {
    guard sessionCalls == .pipelined else { return try await call(session, unary) }
    let reply = try await pipeline(for: session).perform(pipelined)
    guard let response = reply[keyPath: answer] else {
      throw VaultWireError(.unexpected, "the device answered a pipeline call with the reply of another kind")
    }
    return response
  }

  /// The session's open Pipeline stream, or a new one when it has none or its last has ended.
  private func pipeline(for session: VaultSession) -> SessionPipeline {
    let token = Self.tokenText(session)
    return pipelines.withLock { pipelines in
      if let open = pipelines[token], !open.hasEnded { return open }
      let fresh = SessionPipeline(vault: vault, token: token, timeout: timeout)
      pipelines[token] = fresh
      return fresh
    }
  }

  private func callOperator<Response: Sendable>(
    _ body: (Custos_Vault_V1_Operator.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> Response
  ) async throws(VaultWireError) -> Response {
    try await perform { try await body(operatorService, options) }
  }
}

/// Request and response bytes passed through as they are (for probes).
struct RawBytesCoder: MessageSerializer, MessageDeserializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
  func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
    serializedMessageBytes.withUnsafeBytes { Array($0) }
  }
}

extension VaultClient {
  /// Reads a Crypto User credential file as the init-device ceremony writes it (the credential
  /// and a newline, 0600). The bytes go straight into a zeroing buffer.
  public static func readCredential(at path: String) throws(VaultWireError) -> SecretBytes {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw VaultWireError(.invalidArgument, "cannot read the Crypto User credential file \(path)")
    }
    var bytes = Array(data)
    defer { SecretBytes.zero(&bytes) }
    var end = bytes.count
    while end > 0, [0x0A, 0x0D, 0x20].contains(bytes[end - 1]) { end -= 1 }
    return SecretBytes(bytes[0..<end])
  }
}
