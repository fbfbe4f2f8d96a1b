import ATHCore
import Crypto

enum SymmetricKeyFactory {
    static func make() -> SymmetricKey { SymmetricKey(size: .bits256) }
}
