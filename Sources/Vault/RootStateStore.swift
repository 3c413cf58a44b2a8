import Custody
import Foundation
import HSMBridge
import Logging

/// The Merkle root state {epoch, leaf count, root} kept in the custody partition, committed so
/// that a crash at any point leaves the previous or the next epoch, never neither.
///
/// SoftHSM makes `CKA_VALUE` of a data object read-only after creation, and of a data object's
/// attributes only `CKA_LABEL` can be rewritten (measured: `CKA_APPLICATION` and
/// `CKA_OBJECT_ID` answer `CKR_ATTRIBUTE_READ_ONLY`, `CKA_ID` and the date attributes
/// `CKR_ATTRIBUTE_TYPE_INVALID`). A label rewrite costs well under a millisecond, where
/// creating and destroying an object costs about 15 ms. SoftHSM rewrites an object file by
/// truncating it and writing it whole, without fsync, so a process killed in between leaves an
/// empty or partial file for that one object.
///
/// Hence two slots, each a private token data object:
///
/// | attribute | value |
/// |---|---|
/// | `CKA_CLASS` | `CKO_DATA` |
/// | `CKA_TOKEN`, `CKA_PRIVATE` | true, true |
/// | `CKA_APPLICATION` | `custos.root` (read-only after creation) |
/// | `CKA_VALUE` | `custos.root.a` or `custos.root.b`: the slot's name (read-only after creation) |
/// | `CKA_LABEL` | `custos.root.a\|1\|EPOCH\|LEAVES\|ROOT\|TAG`, rewritten by every commit |
/// | `CKA_MODIFIABLE`, `CKA_COPYABLE`, `CKA_DESTROYABLE` | true, false, true |
///
/// TAG is the hex of SHA-256 over "custos/root-state/v1" and the label text before it: it
/// catches a torn or damaged label (the files are inside the emulated HSM boundary; this is an
/// integrity check against crashes, not a MAC against an attacker who can write them). A commit
/// writes the slot that does not hold the current state; reading picks the valid slot with the
/// higher epoch. A slot whose object was destroyed by a crash is created again at the next
/// commit. If no slot is valid the store refuses to open: it never falls back to a fresh root.
public final class RootStateStore: @unchecked Sendable {
  /// `CKA_APPLICATION` of both slots: how the attribute-policy table recognises them.
  public static let application = "custos.root"
  /// The slots' names (their `CKA_VALUE`, and the start of their label).
  public static let slotNames = ["custos.root.a", "custos.root.b"]
  static let format = "1"
  static let tagDomain = Array("custos/root-state/v1".utf8)

  private let session: Session
  private let logger: Logger
  /// Flushes the token directory's files to disk after each commit; nil to leave it to the OS.
  private let flusher: TokenDirectoryFlush?
  // Guarded by `lock`.
  /// What the last flush synced (nil without a directory to flush).
  private var lastFlush: TokenDirectoryFlush.Synced?
  private var slots: [String: ObjectHandle?]
  private var current: RootState
  private var currentSlot: String
  private let lock = NSLock()

  private init(
    session: Session, state: RootState, slot: String, slots: [String: ObjectHandle?], syncDirectory: String?,
    logger: Logger
  ) {
    self.session = session
    self.current = state
    self.currentSlot = slot
    self.slots = slots
    self.flusher = syncDirectory.map(TokenDirectoryFlush.init(directory:))
    self.logger = logger
  }

  /// The committed state.
  public var state: RootState { lock.withLock { current } }

  /// The files and directories the last flush to disk synced, relative to the token directory
  /// (nil when the store flushes nothing): what a commit made durable beyond the OS's cache.
  public var lastSynced: (files: [String], directories: [String])? {
    lock.withLock {
      guard let flusher, let lastFlush else { return nil }
      let prefix = flusher.directory
      func relative(_ path: String) -> String {
        path == prefix ? "." : path.hasPrefix(prefix + "/") ? String(path.dropFirst(prefix.count + 1)) : path
      }
      return (lastFlush.files.map(relative), lastFlush.directories.map(relative))
    }
  }

  /// Creates both slots holding `state` (the genesis state for a fresh device) in the
  /// partition `session` is logged into as the user. The key ceremony calls this once.
  ///
  /// Refuses when any root-state object exists already: a root is never silently replaced.
  public static func initialize(
    session: Session, state: RootState = .genesis, syncDirectory: String? = nil, logger: Logger
  ) throws -> RootStateStore {
    let existing = try session.findObjects([.class(.data), .application(application)])
    guard existing.isEmpty else {
      throw VaultError(
        .rootStateExists,
        "the partition already holds \(existing.count) root-state objects (CKA_APPLICATION '\(application)'); refusing to replace them"
      )
    }
    var created = [ObjectHandle]()
    do {
      for name in slotNames {
        created.append(try session.createObject(template(slot: name, state: state)))
      }
    } catch {
      for handle in created { try? session.destroyObject(handle) }
      throw error
    }
    logger.info(
      "root state initialised",
      metadata: [
        "vault.epoch": "\(state.epoch)", "vault.leaves": "\(state.leafCount)", "vault.root": "\(state.root.hex)",
      ])
    let store = RootStateStore(
      session: session, state: state, slot: slotNames[0],
      slots: Dictionary(uniqueKeysWithValues: zip(slotNames, created.map { Optional($0) })),
      syncDirectory: syncDirectory,
      logger: logger)
    try store.flush()
    return store
  }

  /// Opens the root state of the partition `session` is logged into: the valid slot with the
  /// higher epoch. Fails with `rootStateMissing` on a partition never initialised and with
  /// `rootStateCorrupt` when no slot is valid or the two disagree.
  public static func open(session: Session, syncDirectory: String? = nil, logger: Logger) throws -> RootStateStore {
    let found = try readSlots(session: session)
    guard !found.objects.isEmpty else {
      throw VaultError(
        .rootStateMissing, "the partition holds no root state (no data object with CKA_APPLICATION '\(application)')")
    }
    guard let best = found.valid.max(by: { $0.state.epoch < $1.state.epoch }) else {
      throw VaultError(
        .rootStateCorrupt,
        "no root-state slot is valid (\(found.problems.joined(separator: "; "))); restore the root from a backup or the sync chain"
      )
    }
    if let other = found.valid.first(where: { $0.slot != best.slot }), other.state.epoch == best.state.epoch,
      other.state != best.state
    {
      throw VaultError(
        .rootStateCorrupt, "both root-state slots claim epoch \(best.state.epoch) with different states")
    }
    for problem in found.problems {
      logger.warning(
        "root-state slot not usable; the next commit rewrites it", metadata: ["vault.problem": "\(problem)"])
    }
    var slots = [String: ObjectHandle?]()
    for name in slotNames { slots[name] = found.valid.first { $0.slot == name }?.handle }
    // Damaged slots are destroyed now, so the next commit creates them afresh.
    for handle in found.objects where !found.valid.contains(where: { $0.handle == handle }) {
      try? session.destroyObject(handle)
    }
    logger.debug(
      "root state opened",
      metadata: [
        "vault.epoch": "\(best.state.epoch)", "vault.leaves": "\(best.state.leafCount)", "vault.slot": "\(best.slot)",
      ])
    return RootStateStore(
      session: session, state: best.state, slot: best.slot, slots: slots, syncDirectory: syncDirectory, logger: logger)
  }

  /// Commits `next`, which must be the following epoch. One label rewrite in the slot that
  /// does not hold the current state (or, after a crash destroyed it, one object creation).
  ///
  /// When the token write fails the store re-reads the token, so `state` is what the token
  /// holds, and the error is rethrown.
  public func commit(_ next: RootState) throws {
    try lock.withLock {
      guard next.epoch == current.epoch + 1 else {
        throw VaultError(
          .epochOutOfOrder, "commit of epoch \(next.epoch) after epoch \(current.epoch); epochs advance one at a time")
      }
      let target = RootStateStore.slotNames.first { $0 != currentSlot }!
      do {
        if let handle = slots[target] ?? nil {
          try session.setAttributes([.label(RootStateStore.label(slot: target, state: next))], of: handle)
        } else {
          slots[target] = try session.createObject(RootStateStore.template(slot: target, state: next))
        }
        try flush()
      } catch {
        logger.error(
          "root state commit failed; re-reading the token",
          metadata: ["vault.epoch": "\(next.epoch)", "vault.error": "\(error)"])
        if let reread = try? RootStateStore.readSlots(session: session),
          let best = reread.valid.max(by: { $0.state.epoch < $1.state.epoch })
        {
          current = best.state
          currentSlot = best.slot
          for name in RootStateStore.slotNames { slots[name] = reread.valid.first { $0.slot == name }?.handle }
        }
        throw error
      }
      current = next
      currentSlot = target
    }
  }

  // MARK: Slots

  struct ValidSlot {
    var slot: String
    var handle: ObjectHandle
    var state: RootState
  }

  static func readSlots(session: Session) throws -> (objects: [ObjectHandle], valid: [ValidSlot], problems: [String]) {
    let objects = try session.findObjects([.class(.data), .application(application)])
    var valid = [ValidSlot]()
    var problems = [String]()
    for handle in objects {
      let readings = try session.attributes([.value, .label], of: handle)
      guard case .value(.value(let value)) = readings[0], case .value(.label(let label)) = readings[1] else {
        problems.append("\(handle) lacks its value or label")
        continue
      }
      let name = String(decoding: value, as: UTF8.self)
      guard slotNames.contains(name) else {
        problems.append("\(handle) names an unknown slot")
        continue
      }
      do {
        let state = try parse(label: label, slot: name)
        if valid.contains(where: { $0.slot == name }) {
          problems.append("slot \(name) exists twice")
          continue
        }
        valid.append(ValidSlot(slot: name, handle: handle, state: state))
      } catch {
        problems.append("slot \(name): \(error)")
      }
    }
    return (objects, valid, problems)
  }

  static func template(slot: String, state: RootState) -> [Attribute] {
    [
      .class(.data), .token(true), .private(true), .application(application), .value(Array(slot.utf8)),
      .label(label(slot: slot, state: state)), .copyable(false),
    ]
  }

  /// `SLOT|1|EPOCH|LEAVES|ROOT|TAG`.
  static func label(slot: String, state: RootState) -> String {
    let body = "\(slot)|\(format)|\(state.epoch)|\(state.leafCount)|\(state.root.hex)"
    return body + "|" + tag(body)
  }

  static func tag(_ body: String) -> String {
    Hash256.sha256(tagDomain + Array(body.utf8)).hex
  }

  static func parse(label: String, slot: String) throws -> RootState {
    let parts = label.split(separator: "|", omittingEmptySubsequences: false)
    guard parts.count == 6 else {
      throw VaultError(.rootStateCorrupt, "label has \(parts.count) fields, not 6")
    }
    let body = parts[0..<5].joined(separator: "|")
    guard String(parts[5]) == tag(body) else {
      throw VaultError(.rootStateCorrupt, "integrity tag does not match (torn or damaged write)")
    }
    guard parts[0] == slot, parts[1] == format, let epoch = UInt64(parts[2]), let leafCount = UInt64(parts[3]),
      leafCount >= 1, let root = Hash256(hex: parts[4])
    else {
      throw VaultError(.rootStateCorrupt, "label fields are not slot \(slot), format \(format), epoch, leaves, root")
    }
    return RootState(epoch: epoch, leafCount: leafCount, root: root)
  }

  /// Flushes the token directory's changed files to disk: SoftHSM itself never calls fsync, so
  /// without this a power cut (not a process crash) could lose a commit the caller was told
  /// about. Under the lock (or before the store is shared).
  private func flush() throws {
    guard let flusher else { return }
    lastFlush = try flusher.flush()
  }
}
