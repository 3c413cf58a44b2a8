import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Synchronization

/// One Crypto User session's Pipeline stream: the session calls of any number of tasks, sent on
/// one long-lived HTTP/2 stream and matched to their replies by id.
///
/// Opened on the first call; when the stream ends (the device stopped, the connection broke,
/// the session was refused) every call still waiting fails with the reason and the pipeline is
/// done: the client opens a new one for the next call. A call not answered within the timeout
/// fails with `timedOut` (its change may still be applied, as with a single call).
final class SessionPipeline: Sendable {
  typealias Call = Custos_Vault_V1_PipelineCall.OneOf_Call
  typealias Reply = Custos_Vault_V1_PipelineReply.OneOf_Reply

  private struct Waiting {
    let continuation: CheckedContinuation<Reply, any Error>
    let deadline: ContinuousClock.Instant
  }

  private struct State {
    var nextID: UInt64 = 0
    var waiting: [UInt64: Waiting] = [:]
    /// Why the stream ended; set once.
    var ended: VaultWireError?
  }

  private let state = Mutex(State())
  private let outbox: AsyncStream<Custos_Vault_V1_PipelineCall>.Continuation
  private let stream: Mutex<Task<Void, Never>?> = Mutex(nil)
  private let timeout: Duration

  /// Opens the stream on `vault` with the session token in its metadata.
  init(vault: Custos_Vault_V1_Vault.Client<HTTP2ClientTransport.Posix>, token: String, timeout: Duration) {
    let (calls, outbox) = AsyncStream.makeStream(of: Custos_Vault_V1_PipelineCall.self)
    self.outbox = outbox
    self.timeout = timeout
    var metadata = Metadata()
    metadata.addString(token, forKey: WireMetadata.session)
    let task = Task { [self] in
      await withDiscardingTaskGroup { group in
        group.addTask { await self.expireLateCalls() }
        do {
          try await vault.pipeline(
            metadata: metadata,
            requestProducer: { writer in
              for await call in calls { try await writer.write(call) }
            },
            onResponse: { response in
              do {
                for try await reply in response.messages { self.deliver(reply) }
                self.end(VaultWireError(.stopping, "the device ended the session's stream before answering"))
              } catch {
                self.end(VaultWireError.from(error))
              }
            })
          end(VaultWireError(.stopping, "the device ended the session's stream before answering"))
        } catch {
          end(VaultWireError.from(error))
        }
        group.cancelAll()
      }
    }
    stream.withLock { $0 = task }
  }

  /// Whether the stream has ended (the client should open another).
  var hasEnded: Bool { state.withLock { $0.ended != nil } }

  /// Sends `call` and waits for its reply. A refusal of the device comes back as the
  /// `VaultWireError` a single call would have thrown.
  func perform(_ call: Call) async throws(VaultWireError) -> Reply {
    let reply: Reply
    do {
      reply = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Reply, any Error>) in
        let sent = state.withLock { state -> Result<UInt64, VaultWireError> in
          if let ended = state.ended { return .failure(ended) }
          state.nextID += 1
          state.waiting[state.nextID] = Waiting(
            continuation: continuation, deadline: ContinuousClock.now.advanced(by: timeout))
          return .success(state.nextID)
        }
        switch sent {
        case .failure(let error): continuation.resume(throwing: error)
        case .success(let id):
          var message = Custos_Vault_V1_PipelineCall()
          message.id = id
          message.call = call
          if case .terminated = outbox.yield(message) {
            end(VaultWireError(.unreachable, "the session's stream to the device is closed"))
          }
        }
      }
    } catch {
      throw VaultWireError.from(error)
    }
    if case .refusal(let refusal) = reply { throw VaultWireError(refusal) }
    return reply
  }

  /// Closes the client's side of the stream: the device answers the calls in flight, then
  /// ends it. Returns when it has ended.
  func close() async {
    outbox.finish()
    await stream.withLock { $0 }?.value
  }

  private func deliver(_ reply: Custos_Vault_V1_PipelineReply) {
    guard let reply = reply.reply.map({ (id: reply.id, reply: $0) }) else {
      end(VaultWireError(.unexpected, "the device answered pipeline call \(reply.id) with nothing"))
      return
    }
    state.withLock { $0.waiting.removeValue(forKey: reply.id) }?.continuation.resume(returning: reply.reply)
  }

  /// Fails every waiting call with `error` (the first reason the stream ended is kept).
  private func end(_ error: VaultWireError) {
    let (reason, waiting) = state.withLock { state -> (VaultWireError, [Waiting]) in
      if state.ended == nil { state.ended = error }
      defer { state.waiting = [:] }
      return (state.ended ?? error, Array(state.waiting.values))
    }
    outbox.finish()
    for call in waiting { call.continuation.resume(throwing: reason) }
  }

  /// Fails calls older than the timeout, checking twice a second, until cancelled.
  private func expireLateCalls() async {
    while !Task.isCancelled {
      try? await Task.sleep(for: .milliseconds(500))
      let now = ContinuousClock.now
      let late = state.withLock { state -> [Waiting] in
        let ids = state.waiting.filter { $0.value.deadline <= now }.map(\.key)
        return ids.compactMap { state.waiting.removeValue(forKey: $0) }
      }
      for call in late {
        call.continuation.resume(
          throwing: VaultWireError(.timedOut, "the device did not answer within \(timeout)"))
      }
    }
  }
}

extension Custos_Vault_V1_PipelineReply.OneOf_Reply {
  var rootState: Custos_Vault_V1_GetRootStateResponse? {
    if case .rootState(let response) = self { response } else { nil }
  }
  var vaultResult: Custos_Vault_V1_VaultResult? {
    if case .vaultResult(let response) = self { response } else { nil }
  }
  var publicKey: Custos_Vault_V1_GetPublicKeyResponse? {
    if case .publicKey(let response) = self { response } else { nil }
  }
  var result: Custos_Vault_V1_GetResultResponse? {
    if case .result(let response) = self { response } else { nil }
  }
}
