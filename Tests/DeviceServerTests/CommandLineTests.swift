import Crypto
import Foundation
import SwiftASN1
import TestSupport
import Testing
import VaultWire
import X509

/// `custos operator` and `custos lockdown audit --socket` against the real process, and the TLS
/// listener.
@Suite(.serialized) struct CommandLineTests {
  @Test func operatorStatusAndARehearsedUnsealThenTheSecondLayerAuditSealedAndReady() throws {
    let rehearsed = try RehearsedDevice.get()
    let copy = try rehearsed.copy()
    let socket = socketPath(copy.directory)
    let hsm = try HSMProcess(device: copy.device, socket: socket)
    let custos = builtExecutable("custos")

    let sealed = try runProcess(custos, ["operator", "status", "--socket", socket])
    #expect(sealed.status == 0, "\(sealed.error)")
    #expect(sealed.output.contains("state         SEALED"))
    #expect(sealed.output.contains("serial \(rehearsed.serial)"))
    #expect(sealed.output.contains("unseal        0 of 2 shares (3 made)"))

    // The audit while SEALED: everything outside the contract unknown, no session no call,
    // SEALED refuses, the unapproved-request checks wait for READY.
    let audit = ["lockdown", "audit", "--socket", socket, "--cu-credential", rehearsed.credential]
    let first = try runProcess(custos, audit + ["--json"])
    #expect(first.status == 0, "\(first.output)\(first.error)")
    let report = try JSONDecoder().decode(WireAudit.Report.self, from: Data(first.output.utf8))
    #expect(report.state == "SEALED" && report.passed)
    #expect(report.checks.filter { $0.check == "unknown-method" }.count == WireAudit.foreignMethods.count)
    #expect(report.checks.filter { $0.check == "unknown-method" }.allSatisfy { $0.outcome == .pass })
    #expect(
      Set(report.checks.filter { $0.check == "no-session" && $0.outcome == .pass }.map(\.subject))
        == Set(WireAudit.sessionMethods.map { "custos.vault.v1.Vault/\($0)" }))
    #expect(report.checks.filter { $0.check == "sealed" }.map(\.outcome) == [.pass, .pass, .pass])
    #expect(report.checks.first { $0.check == "wrong-credential" }?.outcome == .pass)
    #expect(report.checks.filter { $0.check == "unapproved-request" }.allSatisfy { $0.outcome == .skipped })

    // Two holders unseal from the participants file.
    let unseal = try runProcess(
      custos,
      [
        "operator", "unseal", "--socket", socket, "--rehearsal", "--participants", rehearsed.participants,
        "--rehearsal-dir", rehearsed.rehearsal,
      ])
    #expect(unseal.status == 0, "\(unseal.error)")
    #expect(unseal.output.contains("unseal progress: 1 of 2 (accepted: frank)"))
    #expect(unseal.output.contains("quorum met; the device is READY"))
    let ready = try runProcess(custos, ["operator", "status", "--socket", socket])
    #expect(ready.output.contains("state         READY"))
    #expect(ready.output.contains("root          epoch 0, 1 leaves, " + String(repeating: "0", count: 64)))

    // The audit while READY: the root answers; unapproved requests are refused.
    let second = try runProcess(custos, audit)
    #expect(second.status == 0, "\(second.output)\(second.error)")
    #expect(second.output.contains("PASS    root-state"))
    #expect(second.output.split(separator: "\n").filter { $0.contains("PASS    unapproved-request") }.count == 4)
    #expect(second.output.contains("0 failed, "))
    // A wallet the caller made up, approved by its own key: refused, it is not in the tree.
    #expect(second.output.contains("PASS    forged-wallet"))

    // A wrong credential file: the login check fails, and so does the audit.
    let wrongCredential = copy.directory.appending("wrong.credential")
    try Data("custos-cu1-\(String(repeating: "ab", count: 32))\n".utf8).write(to: URL(fileURLWithPath: wrongCredential))
    let wrong = try runProcess(
      custos, ["lockdown", "audit", "--socket", socket, "--cu-credential", wrongCredential])
    #expect(wrong.status == 1)
    #expect(wrong.output.contains("FAIL    login"))

    // Misuse is refused with the reason.
    let mixed = try runProcess(custos, audit + ["--device", copy.device])
    #expect(mixed.status != 0 && mixed.error.contains("--socket audits a running device"))
    let noSocket = try runProcess(custos, ["operator", "status", "--socket", copy.directory.appending("none.sock")])
    #expect(noSocket.status != 0 && noSocket.error.contains("no device socket at"))
    hsm.stop()
  }

  @Test func theDeviceServesOverTLSToAClientThatTrustsItsCertificateOnly() async throws {
    let rehearsed = try RehearsedDevice.get()
    let files = try TemporaryDirectory("custos-tls")
    let (certificate, key) = try selfSignedCertificate(name: "localhost")
    try certificate.write(toFile: files.appending("cert.pem"), atomically: true, encoding: .utf8)
    try key.write(toFile: files.appending("key.pem"), atomically: true, encoding: .utf8)
    let (otherCertificate, _) = try selfSignedCertificate(name: "localhost")
    try otherCertificate.write(toFile: files.appending("other.pem"), atomically: true, encoding: .utf8)

    let copy = try rehearsed.copy()
    let hsm = try HSMProcess(
      device: copy.device, socket: nil,
      extra: [
        "--listen", "127.0.0.1:0", "--tls-cert", files.appending("cert.pem"), "--tls-key", files.appending("key.pem"),
      ])
    #expect(hsm.address.hasPrefix("tls:127.0.0.1:"))
    let port = try #require(Int(hsm.address.split(separator: ":").last!))
    #expect(port > 0)

    // Generous: the login's Argon2id (64 MiB) competes with every other test on the machine.
    let trusted = try VaultClient(
      endpoint: .tls(host: "127.0.0.1", port: port, trustRoots: files.appending("cert.pem"), serverName: "localhost"),
      timeout: .seconds(60))
    let status = try await trusted.status()
    #expect(status.serial == rehearsed.serial && status.state == .sealed)
    #expect(try await trusted.login(credential: try rehearsed.cryptoUserCredential()).token.count == 74)
    await trusted.close()

    // A client that trusts another certificate does not get through.
    let untrusted = try VaultClient(
      endpoint: .tls(host: "127.0.0.1", port: port, trustRoots: files.appending("other.pem"), serverName: "localhost"),
      timeout: .seconds(60))
    #expect(await refusal { try await untrusted.status() }?.code == .unreachable)
    await untrusted.close()
    hsm.stop()
  }
}

/// A self-signed P-256 certificate for `name` (and 127.0.0.1) and its key, PEM.
private func selfSignedCertificate(name: String) throws -> (certificate: String, key: String) {
  let key = P256.Signing.PrivateKey()
  let subject = try DistinguishedName { CommonName(name) }
  let certificate = try Certificate(
    version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
    notValidBefore: Date().addingTimeInterval(-300), notValidAfter: Date().addingTimeInterval(3600),
    issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
    extensions: try Certificate.Extensions {
      Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
      SubjectAlternativeNames([.dnsName(name), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
    },
    issuerPrivateKey: Certificate.PrivateKey(key))
  return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
}
