import Custody
import Foundation
import TestSupport
import Testing
import VaultWire

/// The Pipeline stream (a session's calls on one long-lived HTTP/2 stream) against the real
/// custos-hsm: each of many calls in flight gets its own answer, the same answer and the same
/// refusal a single call gets; the session is checked at every call; a stopping device ends
/// the streams its clients hold open.
@Suite(.serialized) struct PipelineTests {
  @Test func manyCallsInFlightOnOneStreamEachGetTheAnswerASingleCallGets() async throws {
    let prepared = try PreparedDevice(wallets: 2)
    let (hsm, pipelined, session) = try await prepared.startUnsealed()
    let unary = try hsm.client(.unary)
    #expect(pipelined.sessionCalls == .pipelined && unary.sessionCalls == .unary)

    let paths = (0..<48).map { "m/44'/60'/0'/0/\($0)" }
    let (base, durable) = (prepared.query, prepared.durable)
    let answers = try await withThrowingTaskGroup(of: (String, PublicKeyInfo).self) { group in
      for path in paths {
        group.addTask {
          var query = base
          query.path = path
          return (path, try await pipelined.publicKey(query, session: session))
        }
      }
      for _ in 0..<16 {
        group.addTask {
          #expect(try await pipelined.rootState(session) == durable)
          return ("", try await pipelined.publicKey(base, session: session))
        }
      }
      return try await group.reduce(into: [String: PublicKeyInfo]()) { $0[$1.0] = $1.1 }
    }
    #expect(Set(paths.compactMap { answers[$0]?.address }).count == paths.count)
    for path in paths {
      var query = prepared.query
      query.path = path
      let single = try await unary.publicKey(query, session: session)
      #expect(answers[path]?.publicKey == single.publicKey && answers[path]?.address == single.address)
      #expect(answers[path]?.path == path)
    }
    #expect(answers[PreparedDevice.path]?.address == prepared.expected.address)
    #expect(answers[""]?.address == prepared.expected.address)
    #expect(try await pipelined.result(envelopeHash: Hash256.sha256([1, 2, 3]), session: session) == nil)
    await pipelined.close()
    await unary.close()
    #expect(hsm.stop().status == 0)
  }

  @Test func aRefusalAnswersThatCallAloneAsASingleCallsRefusalAndTheStreamGoesOn() async throws {
    let prepared = try PreparedDevice(wallets: 2)
    let (hsm, pipelined, session) = try await prepared.startUnsealed()
    let unary = try hsm.client(.unary)
    var badPath = prepared.query
    badPath.path = "m/44'/x"
    var otherWallet = prepared.query
    otherWallet.walletData = SampleWallet.encoding(id: 3)
    for query in [badPath, otherWallet] {
      let onStream = await refusal { try await pipelined.publicKey(query, session: session) }
      let single = await refusal { try await unary.publicKey(query, session: session) }
      #expect(onStream != nil && onStream == single)
      #expect(onStream?.code == .invalidArgument)
      // The same stream answers the next call.
      #expect(try await pipelined.publicKey(prepared.query, session: session).address == prepared.expected.address)
    }
    await pipelined.close()
    await unary.close()
    #expect(hsm.stop().status == 0)

    // A SEALED device refuses each call on the stream as it refuses a single call.
    let sealed = try HSMProcess(device: prepared.copy.device, socket: prepared.socket)
    let (onStream, single) = (try sealed.client(), try sealed.client(.unary))
    let credential = try prepared.copy.source.cryptoUserCredential()
    let sealedSession = try await onStream.login(credential: credential)
    let streamRefusal = await refusal { try await onStream.rootState(sealedSession) }
    #expect(streamRefusal?.code == .sealed)
    #expect(streamRefusal == (await refusal { try await single.rootState(sealedSession) }))
    #expect((await refusal { try await onStream.rootState(sealedSession) })?.code == .sealed)
    await onStream.close()
    await single.close()
    #expect(sealed.stop().status == 0)
  }

  @Test func theSessionIsCheckedWhenTheStreamOpensAndAtEveryCall() async throws {
    let prepared = try PreparedDevice(wallets: 1)
    let (hsm, client, session) = try await prepared.startUnsealed()
    let forged = VaultSession(
      token: SecretBytes(utf8: "forged-token"), expiresAt: session.expiresAt, idleTimeout: session.idleTimeout)
    #expect((await refusal { try await client.rootState(forged) })?.code == .sessionRequired)
    // The refused stream does not stand in the way of the valid session's.
    #expect(try await client.rootState(session) == prepared.durable)

    // Closed from another connection while this client's stream is open: the next call on the
    // open stream is refused.
    let other = try hsm.client(.unary)
    try await other.logout(session)
    #expect((await refusal { try await client.rootState(session) })?.code == .sessionRequired)
    await other.close()
    await client.close()
    #expect(hsm.stop().status == 0)
  }

  @Test func aGracefulStopEndsTheStreamsClientsHoldOpen() async throws {
    let prepared = try PreparedDevice(wallets: 1)
    let (hsm, client, session) = try await prepared.startUnsealed()
    #expect(try await client.rootState(session) == prepared.durable)
    // The client keeps its stream open; SIGTERM must not wait for it.
    let termination = hsm.stop()
    #expect(termination.reason == .exit && termination.status == 0 && !termination.killedAfterLimit)
    let after = await refusal { try await client.rootState(session) }
    #expect(after?.code == .unreachable || after?.code == .stopping)
    await client.close()
  }
}
