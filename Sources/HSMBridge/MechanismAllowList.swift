/// The mechanisms a partition's SoftHSM instance may offer (its `slots.mechanisms`).
///
/// Profiles live in `softhsm/<profile>.mechanisms`, compiled into HSMBridge: one `CKM_` name a
/// line, `#` starts a comment.
public struct MechanismAllowList: Hashable, Sendable {
  /// The profile's name (`custody`, `admin`, `officer`, `default`).
  public let profile: String
  /// The mechanisms, in the order of the profile file.
  public let mechanisms: [MechanismType]

  public init(profile: String, mechanisms: [MechanismType]) {
    self.profile = profile
    self.mechanisms = mechanisms
  }

  /// Parses a profile file; an unknown mechanism name is an error naming its line.
  public init(profile: String, text: String) throws {
    var mechanisms = [MechanismType]()
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
        .trimmingCharacters(in: " \t\r")
      guard !content.isEmpty else { continue }
      guard let type = MechanismType(name: String(content)) else {
        throw HSMBridgeError(
          .invalidArgument, "softhsm/\(profile).mechanisms line \(number + 1): unknown mechanism '\(content)'")
      }
      mechanisms.append(type)
    }
    self.init(profile: profile, mechanisms: mechanisms)
  }

  /// The compiled-in profile `name`, or nil when there is none.
  public static func profile(_ name: String) -> MechanismAllowList? {
    guard let text = embeddedProfiles[name] else { return nil }
    // Profiles are checked by the test suite, so a failure here is a build defect.
    return try! MechanismAllowList(profile: name, text: text)
  }

  /// The profile for a partition called `name`: its own if `softhsm/` has one, else `default`.
  public static func forPartition(_ name: String) -> MechanismAllowList {
    profile(name) ?? profile("default")!
  }

  /// The names of the compiled-in profiles.
  public static var profileNames: [String] { embeddedProfiles.keys.sorted() }

  static let embeddedProfiles: [String: String] = [
    "custody": String(decoding: PackageResources.custody_mechanisms, as: UTF8.self),
    "admin": String(decoding: PackageResources.admin_mechanisms, as: UTF8.self),
    "officer": String(decoding: PackageResources.officer_mechanisms, as: UTF8.self),
    "default": String(decoding: PackageResources.default_mechanisms, as: UTF8.self),
  ]

  /// The SoftHSM configuration template of `softhsm/softhsm2.conf.template`.
  static let configurationTemplate = String(
    decoding: PackageResources.softhsm2_conf_template, as: UTF8.self)

  /// The `softhsm2.conf` text for a partition whose tokens live in `tokenDirectory`.
  func softHSMConfiguration(tokenDirectory: String) -> String {
    MechanismAllowList.configurationTemplate
      .replacingOccurrences(of: "@TOKENDIR@", with: tokenDirectory)
      .replacingOccurrences(of: "@MECHANISMS@", with: mechanisms.map(\.name).joined(separator: ","))
  }
}

extension StringProtocol {
  func trimmingCharacters(in characters: String) -> String {
    let set = Set(characters)
    var slice = Substring(self)
    while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
    while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
    return String(slice)
  }
}
