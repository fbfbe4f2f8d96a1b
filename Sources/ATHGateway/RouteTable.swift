import ATHServer
import Hummingbird
import Synchronization

/// The routes one listener answers with, swapped whole when the gateway reloads its
/// configuration: the listener keeps its socket and its connections, each request is answered by
/// the routes in force when it arrived.
final class RouteTable: Sendable {
    private let current: Mutex<(responder: any HTTPResponder<ATHRequestContext>, served: [String])>

    init(_ router: Router<ATHRequestContext>) {
        current = Mutex(Self.table(router))
    }

    func set(_ router: Router<ATHRequestContext>) {
        let table = Self.table(router)
        current.withLock { $0 = table }
    }

    static func table(_ router: Router<ATHRequestContext>) -> (responder: any HTTPResponder<ATHRequestContext>, served: [String]) {
        // Added after every route, it wraps the router's not-found answer alone.
        router.add(middleware: UnknownEndpointMiddleware<ATHRequestContext>())
        return (router.buildResponder(), served(router))
    }

    /// "METHOD /path/{parameter}" for each route in force: what the OpenAPI document must describe.
    var served: [String] { current.withLock { $0.served } }

    static func served(_ router: Router<ATHRequestContext>) -> [String] {
        router.routes.map { "\($0.method.rawValue) \($0.path.description)" }
    }

    /// The router the listener is started with: it only hands each request to the table.
    func router() -> Router<ATHRequestContext> {
        let router = Router(context: ATHRequestContext.self)
        router.middlewares.add(Dispatch(table: self))
        return router
    }

    struct Dispatch: RouterMiddleware {
        typealias Context = ATHRequestContext
        let table: RouteTable

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            let responder = table.current.withLock { $0.responder }
            return try await responder.respond(to: request, context: context)
        }
    }
}

