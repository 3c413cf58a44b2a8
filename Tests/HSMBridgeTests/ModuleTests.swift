import Custody
import Foundation
import HSMBridge
import TestSupport
import Testing

@Suite(.serialized) struct ModuleTests {
  @Test func loadsSoftHSMAndReportsItself() throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    let info = partition.module.info
    #expect(info.manufacturer == "SoftHSM")
    #expect(info.libraryVersion.major == 2)
    #expect(info.cryptokiVersion.major >= 2)
    let token = try partition.tokenInfo()
    #expect(token.label == "scratch")
    #expect(token.initialized)
    #expect(token.userPINInitialized)
    #expect(token.loginRequired)
    #expect(token.hasRandomNumberGenerator)
    #expect(!token.serialNumber.isEmpty)
  }

  @Test func missingModuleIsNamed() throws {
    let error = #expect(throws: HSMBridgeError.self) {
      _ = try PKCS11Module(path: "/nonexistent/libnothing.so", logger: testLogger)
    }
    #expect(error?.code == .moduleNotFound)
    #expect(error?.reason.contains("/nonexistent/libnothing.so") == true)
  }

  @Test func aLibraryThatIsNotAModuleIsRefused() throws {
    // libc is a shared library with no PKCS #11 entry point.
    let error = #expect(throws: HSMBridgeError.self) {
      _ = try PKCS11Module(path: "/lib/x86_64-linux-gnu/libc.so.6", logger: testLogger)
    }
    #expect(error?.code == .missingFunction)
  }

  @Test func slotsMechanismsAndMechanismInfo() throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    let mechanisms = try partition.mechanisms()
    let expected = MechanismAllowList.profile("default")!.mechanisms
    #expect(Set(mechanisms) == Set(expected))
    let gcm = try partition.module.mechanismInfo(.aesGCM, slot: partition.slot)
    #expect(gcm.usages.contains("encrypt"))
    #expect(gcm.usages.contains("decrypt"))
    #expect(gcm.maxKeySize >= 32)
    let slotInfo = try partition.module.slotInfo(partition.slot)
    #expect(slotInfo.tokenPresent)
    #expect(!slotInfo.removableDevice)
  }

  @Test func wrongPINNamesTheCallAndTheCode() throws {
    let test = try TestDevice()
    let session = try test.device.partition("scratch").openSession()
    let error = #expect(throws: PKCS11Error.self) {
      try session.login(.user, pin: SecretBytes(utf8: "not-the-pin"))
    }
    #expect(error?.function == "C_Login")
    #expect(error?.code == .pinIncorrect)
    #expect(error?.code.name == "CKR_PIN_INCORRECT")
    #expect(error?.description == "C_Login returned CKR_PIN_INCORRECT (0x000000A0)")
  }

  @Test func returnValueNamesAreExhaustiveAndVendorCodesAreHex() {
    #expect(ReturnValue(rawValue: 0x0).name == "CKR_OK")
    #expect(ReturnValue(rawValue: 0x6A).name == "CKR_KEY_UNEXTRACTABLE")
    #expect(ReturnValue(rawValue: 0x68).name == "CKR_KEY_FUNCTION_NOT_PERMITTED")
    #expect(ReturnValue(rawValue: 0x1B8).name == "CKR_PIN_TOO_WEAK")
    #expect(ReturnValue(rawValue: 0x8000_0042).name == "CKR_VENDOR_DEFINED+0x00000042")
    #expect(ReturnValue(rawValue: 0x7777).name == "CKR_UNKNOWN(0x00007777)")
  }

  @Test func initPINAndSetPIN() throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    let session = try partition.openSession()
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    try session.setPIN(old: SecretBytes(utf8: TestPINs.user), new: SecretBytes(utf8: "changed-9876"))
    try session.logout()
    #expect(throws: PKCS11Error(code: .pinIncorrect, function: "C_Login")) {
      try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    }
    try session.login(.user, pin: SecretBytes(utf8: "changed-9876"))
    try session.logout()
    // The Security Officer resets the user PIN.
    try session.login(.securityOfficer, pin: SecretBytes(utf8: TestPINs.so))
    #expect(try session.info().state == .readWriteSecurityOfficer)
    try session.initPIN(SecretBytes(utf8: "reset-by-so-1"))
    try session.logout()
    try session.login(.user, pin: SecretBytes(utf8: "reset-by-so-1"))
    #expect(try session.info().state == .readWriteUser)
  }

  @Test func reinitialisingATokenDestroysItsObjects() throws {
    let test = try TestDevice()
    let partition = try test.device.partition("scratch")
    do {
      let session = try test.userSession()
      _ = try session.createObject([.class(.data), .token(true), .label("doomed")])
      #expect(try session.findObjects([.label("doomed")]).count == 1)
      try session.logout()
    }
    try partition.module.initToken(partition.slot, soPIN: SecretBytes(utf8: TestPINs.so), label: "scratch")
    let slot = try partition.module.slot(withTokenLabel: "scratch")
    let session = try partition.module.openSession(slot)
    #expect(try session.findObjects([.label("doomed")]).isEmpty)
    #expect(throws: PKCS11Error.self) {
      try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    }
  }

  @Test func closedSessionRefusesUse() throws {
    let test = try TestDevice()
    let session = try test.userSession()
    try session.close()
    #expect(session.isClosed)
    let error = #expect(throws: HSMBridgeError.self) { _ = try session.generateRandom(16) }
    #expect(error?.code == .sessionClosed)
    #expect(error?.reason.contains("C_GenerateRandom") == true)
    try session.close()  // harmless
  }

  @Test func readOnlySessionCannotCreateTokenObjects() throws {
    let test = try TestDevice()
    let session = try test.device.partition("scratch").openSession(readWrite: false)
    try session.login(.user, pin: SecretBytes(utf8: TestPINs.user))
    #expect(try session.info().state == .readOnlyUser)
    #expect(throws: PKCS11Error(code: .sessionReadOnly, function: "C_CreateObject")) {
      _ = try session.createObject([.class(.data), .token(true), .label("x")])
    }
  }
}
