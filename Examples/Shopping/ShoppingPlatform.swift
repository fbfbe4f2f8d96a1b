import ATHCore
import ATHServer
import Foundation
import Hummingbird

/// The e-commerce platform of seed 001, with ATH built in ("SDK native integration mode").
public enum ShoppingPlatform {
    public static let did = try! DID("did:ath:ecommerce_platform_001")

    /// The platform's side of the trusted handshake: what it offers and how it limits grants.
    public static let policy = ServerPolicy(
        scopesSupported: ["goods:read", "order:create", "user:profile"], tokenMaxTTL: 7200, requireUserConfirmation: true,
        restrictions: Restrictions(rate_limit: "100/minute", order_amount_limit: 5000),
        // Account types follow the service's scopes: a "read" agent may browse but never order.
        accountTypes: ["read": ["goods:read"], "read-write": ["goods:read", "order:create", "user:profile"]],
        scopeDescriptions: [
            "goods:read": "See and search the goods on sale",
            "order:create": "Place orders that you pay for",
            "user:profile": "Read your name, address and phone number",
        ])

    public struct Goods: Codable, Sendable {
        public var id: String
        public var name: String
        public var price: Double
    }

    public static let catalog = [
        Goods(id: "123", name: "Phone X (128 GB)", price: 3999),
        Goods(id: "124", name: "Phone X Pro (256 GB)", price: 5999),
        Goods(id: "200", name: "Phone case", price: 59),
        Goods(id: "300", name: "Laptop Air 13", price: 7999),
    ]

    struct OrderRequest: Decodable {
        var goods_id: String
        var quantity: Int
    }

    /// The platform's API: each route names the scope it needs. With `channels`, the same
    /// operations are also RPC methods of the encrypted session (`sessionMethods`).
    public static func router(service: ATHService, channels: SessionChannels? = nil) -> Router<ATHRequestContext> {
        let router = Router(context: ATHRequestContext.self)
        router.get("health") { _, _ in ["status": "ok"] }
        HandshakeRoutes<ATHRequestContext>(service: service).register(on: router)
        // The users' consent console (open it at http://localhost:<port>/ath/console).
        ConsoleRoutes<ATHRequestContext>(service: service).register(on: router)
        if let channels { SessionRoutes<ATHRequestContext>(channels: channels).register(on: router) }
        let api = router.group("api").add(middleware: ErrorShapeMiddleware<ATHRequestContext>())
        api.group("goods").add(middleware: ATHAccessMiddleware(service, scope: "goods:read"))
            .get { request, _ in try searchGoods(request) }
        api.group("order").add(middleware: ATHAccessMiddleware(service, scope: "order:create"))
            .post { request, context -> Response in
                let access = try context.requireAccess()
                let order: OrderRequest
                do {
                    order = try await request.decode(as: OrderRequest.self, context: context)
                } catch {
                    throw ATHError(.malformedMessage, "order needs goods_id and quantity")
                }
                return try jsonResponse(try placeOrder(order, access: access), status: .created)
            }
        api.group("profile").add(middleware: ATHAccessMiddleware(service, scope: "user:profile"))
            .get { _, context -> Response in
                try jsonResponse(["user": try context.requireAccess().claims.sub], status: .ok)
            }
        // After the last route: an unknown path is NOT_FOUND in the error shape, not an empty 404.
        router.add(middleware: UnknownEndpointMiddleware<ATHRequestContext>())
        return router
    }

    /// The same operations over the encrypted session, each with the scope its HTTP route needs.
    public static var sessionMethods: SessionRPCRoutes {
        var methods = SessionRPCRoutes()
        methods.register("goods.search", scope: "goods:read") { params, _ in
            let keyword = params["keyword"]?.stringValue?.lowercased() ?? ""
            return ["goods": try JSONValue.of(found(keyword))]
        }
        methods.register("order.create", scope: "order:create") { params, access in
            guard let order = try? params.decode(OrderRequest.self) else {
                throw ATHError(.malformedMessage, "order needs goods_id and quantity")
            }
            return try placeOrder(order, access: access)
        }
        methods.register("user.profile", scope: "user:profile") { _, access in ["user": .string(access.claims.sub)] }
        return methods
    }

    /// An order within the grant's amount limit; the order's amount is what the limit counts.
    static func placeOrder(_ order: OrderRequest, access: VerifiedAccess) throws -> JSONValue {
        guard order.quantity > 0, order.quantity <= 1000, let goods = catalog.first(where: { $0.id == order.goods_id }) else {
            throw ATHError(.malformedMessage, "unknown goods_id or bad quantity")
        }
        let amount = goods.price * Double(order.quantity)
        try access.checkAmount(amount)
        return [
            "order_id": .string(Nonce.generate(bytes: 8)), "goods_id": .string(goods.id), "amount": .number(amount),
            "user": .string(access.claims.sub),
        ]
    }

    static func found(_ keyword: String) -> [Goods] {
        catalog.filter { keyword.isEmpty || $0.name.lowercased().contains(keyword) }
    }

    /// GET /api/goods?keyword=: the product search (also served unprotected by `ath bench`, to
    /// measure what the access check costs).
    public static func searchGoods(_ request: Request) throws -> Response {
        let keyword = request.uri.queryParameters["keyword"].map { String($0).lowercased() } ?? ""
        return try jsonResponse(["goods": found(keyword)], status: .ok)
    }

    static func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status) throws -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder().encode(value))))
    }
}
