import Custody
import HSMBridge
import TestSupport
import Testing

@Suite(.serialized) struct ConcurrencyTests {
  @Test func parallelSessionsFromConcurrentTasks() async throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    let setup = try test.userSession()
    let master = try setup.generateKey(
      .aesKeyGen,
      [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .derive(true)])
    let results = try await withThrowingTaskGroup(of: Bool.self) { group in
      for task in 0..<8 {
        group.addTask {
          let session = try partition.openSession()
          var ok = true
          for round in 0..<25 {
            let key = try session.deriveKey(
              .aesECBEncryptData([UInt8](repeating: UInt8(task), count: 32)), baseKey: master,
              [
                .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .sensitive(true),
                .extractable(false), .encrypt(true), .decrypt(true),
              ])
            let gcm = Mechanism.aesGCM(iv: try session.generateRandom(12), aad: [UInt8(round)])
            let message = [UInt8(task), UInt8(round)]
            let opened = try session.decrypt(gcm, key: key, try session.encrypt(gcm, key: key, message))
            ok = ok && opened == message
            try session.destroyObject(key)
          }
          return ok
        }
      }
      return try await group.reduce(into: [Bool]()) { $0.append($1) }
    }
    #expect(results.count == 8 && results.allSatisfy { $0 })
  }

  @Test func oneSessionSharedByTasksRunsOneOperationAtATime() async throws {
    let test = try TestDevice()
    let session = try test.userSession()
    let key = try session.generateKey(
      .aesKeyGen, [.class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .encrypt(true), .decrypt(true)])
    // Interleaved init/final pairs on one PKCS #11 session would fail with
    // CKR_OPERATION_ACTIVE; the session serialises whole operations instead.
    try await withThrowingTaskGroup(of: Void.self) { group in
      for task in 0..<6 {
        group.addTask {
          for round in 0..<40 {
            let gcm = Mechanism.aesGCM(iv: [UInt8](repeating: UInt8(task), count: 12), aad: [UInt8(round)])
            let sealed = try session.encrypt(gcm, key: key, [UInt8(task)])
            let opened = try session.decrypt(gcm, key: key, sealed)
            #expect(opened == [UInt8(task)])
          }
        }
      }
      try await group.waitForAll()
    }
  }
}
