using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Potluck.Protocol.Metrics;
using Potluck.Protocol.Multistream;
using Potluck.Protocol.Muxing;
using Potluck.Protocol.Runtime;

namespace Potluck.Protocol.Host;

/// <summary>
/// Routes inbound streams to handlers by protocol id: accepts every stream a connection's muxer offers, negotiates
/// its protocol with multistream-select (bounded by <see cref="HostOptions.StreamNegotiationTimeout"/>), and runs the
/// handler. This is the one catch site of inbound stream handlers (DESIGN §5): what a failure tears down and how loudly
/// it is logged follows <see cref="Failures.Classify"/> — a protocol violation resets the stream, or closes the whole
/// connection when its <see cref="BlastRadius"/> is <see cref="BlastRadius.Connection"/>, and is logged at Debug; a peer
/// that went away, a refused limit or an unsupported protocol resets the stream at Debug; our own shutdown is quiet;
/// anything else is a bug of ours, logged at Error, and resets the stream.
/// </summary>
internal sealed class StreamRouter : IAsyncDisposable
{
    // Each handler beside the protocol id it was registered with: an inbound stream takes that string (the protocol's
    // constant, shared by every node in the process) instead of the one read off the wire, which its connection's
    // protocol table, the stream and its reservation would otherwise each keep for their life.
    private readonly ConcurrentDictionary<string, (string Protocol, StreamHandler Handler)> _handlers = new(StringComparer.Ordinal);
    private readonly HostOptions _options;
    private readonly MultistreamOptions _multistream;
    private readonly TimeProvider _time;
    private readonly ILogger _log;
    private readonly BackgroundWork _work;
    private readonly ProtocolInstruments _instruments;
    private readonly ResourceManager _resources;
    private readonly PeerBudgets _budgets;
    private readonly ConcurrentDictionary<string, string> _streamBudgets = new(StringComparer.Ordinal);

    public StreamRouter(HostOptions options, MultistreamOptions multistream, NodeRuntime runtime, ILogger log, ProtocolInstruments instruments,
        ResourceManager? resources = null, PeerBudgets? budgets = null)
    {
        _instruments = instruments;
        _budgets = budgets ?? new PeerBudgets(options.Budgets, runtime.Time);
        _resources = resources ?? new ResourceManager(options, runtime.Time);
        _options = options;
        _multistream = multistream;
        _time = runtime.Time;
        _log = log;
        _work = runtime.CreateBackgroundWork("stream router", log);
    }

    /// <summary>Raised when a handler is added or removed.</summary>
    public event Action? Changed;

    /// <summary>Protocol ids with a handler, in ordinal order.</summary>
    public IReadOnlyCollection<string> Protocols => _handlers.Keys.Order(StringComparer.Ordinal).ToArray();

    public void SetHandler(string protocol, StreamHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(protocol);
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[protocol] = (protocol, handler);
        Changed?.Invoke();
    }

    /// <summary>Every inbound stream of <paramref name="protocol"/> spends a token of <paramref name="budget"/>.</summary>
    public void SetBudget(string protocol, string budget)
    {
        ArgumentException.ThrowIfNullOrEmpty(protocol);
        if (!_budgets.IsBudget(budget))
        {
            throw new ArgumentException($"no budget named '{budget}'", nameof(budget));
        }
        _streamBudgets[protocol] = budget;
    }

    public void RemoveHandler(string protocol)
    {
        if (_handlers.TryRemove(protocol, out _))
        {
            Changed?.Invoke();
        }
    }

    /// <summary>
    /// Accepts the inbound streams of <paramref name="connection"/> until it closes, then awaits its end and runs
    /// <paramref name="closed"/>: one parked task per connection, which both routes its streams and notices its close.
    /// The accept takes no token (it would keep a registration on the stop token for the connection's life): the loop ends
    /// when the connection closes, which the host does to every connection when it stops.
    /// </summary>
    public void Attach(Connection connection, Func<Connection, Task> closed) =>
        _work.Run("connection", () => ServeAsync(connection, closed));

    private async Task ServeAsync(Connection connection, Func<Connection, Task> closed)
    {
        while (true)
        {
            IMuxedStream? muxed;
            try
            {
                muxed = await connection.Muxed.TryAcceptStreamAsync(CancellationToken.None);
            }
            catch (Exception e)
            {
                // The connection closed: the end of the loop, not a failure, unless it is a bug.
                if (Failures.Classify(e, CancellationToken.None).Kind == FailureKind.Internal)
                {
                    _log.AcceptStreamBug(e);
                }
                break;
            }
            if (muxed is null)
            {
                break; // the connection closed (its normal end: nothing thrown)
            }
            await RouteAsync(connection, muxed);
        }
        // Streams are refused from the moment the connection starts closing; its end comes once the muxer has flushed.
        await connection.Completion.ConfigureAwait(ConfigureAwaitOptions.ContinueOnCapturedContext | ConfigureAwaitOptions.SuppressThrowing);
        await closed(connection);
    }

    /// <summary>One accepted inbound stream: the peer's share is taken before anything is read, then it runs on its own.</summary>
    private async ValueTask RouteAsync(Connection connection, IMuxedStream muxed)
    {
        if (_work.IsStopping)
        {
            muxed.Reset(); // the node is stopping: no handler will run
            await muxed.DisposeAsync();
            return;
        }
        // The peer's share of inbound streams (over all its connections) is taken before anything is read.
        ResourceManager.StreamReservation reservation;
        try
        {
            reservation = _resources.ReserveInboundStream(connection.RemotePeer);
        }
        catch (ResourceLimitException e)
        {
            _log.StreamRefused(e.Message);
            muxed.Reset();
            await muxed.DisposeAsync();
            return;
        }
        // Each stream on its own: a handler never runs inside the accept loop (nor holds up the next stream).
        _work.Run("inbound stream", ct => HandleAsync(connection, muxed, reservation, ct));
    }

    /// <summary>
    /// Negotiates and runs one inbound stream; never throws. A handler that does not end at once (a gossip peer's stream,
    /// read for the connection's life) is left to a small continuation on its task (<see cref="InboundTail"/>): this
    /// method, its state and its piece of background work end here instead of staying parked beside the handler
    /// (~0.5 KiB per long-lived stream); what was left of them (the failure's classification and teardown, the stream's
    /// disposal, the reservation) runs when the handler ends, on the context this method would have resumed on.
    /// </summary>
    private async Task HandleAsync(Connection connection, IMuxedStream muxed, ResourceManager.StreamReservation reservation, CancellationToken stopping)
    {
        Libp2pStream? stream = null;
        var protocol = "";
        var handedOff = false;
        try
        {
            using (var timeout = new CancellationTokenSource(_options.StreamNegotiationTimeout, _time))
            using (var linked = _work.Link(timeout.Token, stopping))
            {
                var negotiation = await MultistreamSelect.TryHandleAsync(muxed, _handlers.ContainsKey, _multistream, linked.Token);
                if (negotiation.Failure is { } ended)
                {
                    // The dialer ended the stream between two messages (as it does after our "na"): a result, not an exception.
                    await FailAsync(connection, muxed, protocol, ended, null);
                    return;
                }
                protocol = negotiation.Protocol!;
            }
            if (!_handlers.TryGetValue(protocol, out var registered))
            {
                muxed.Reset(); // removed while the stream was negotiating
                return;
            }
            (protocol, var handler) = registered; // the registered string, equal to the one negotiated
            reservation.SetProtocol(protocol);
            if (_streamBudgets.TryGetValue(protocol, out var budget) && !_budgets.TryTake(connection.RemotePeer, budget))
            {
                throw new ResourceLimitException(budget, 0, $"{budget}: {connection.RemotePeer} is over its budget");
            }
            _instruments.StreamOpened(protocol, Direction.Inbound);
            stream = new Libp2pStream(muxed, protocol, connection, Direction.Inbound);
            var handling = handler(stream, stopping);
            if (!handling.IsCompleted)
            {
                new InboundTail(this, connection, muxed, reservation, stream, stopping, handling).Park();
                handedOff = true;
                return;
            }
            await handling; // ended at once: its failure, if any, is caught below as before
        }
        catch (Exception e)
        {
            await FailAsync(connection, muxed, protocol, Failures.Classify(e, stopping), e);
        }
        finally
        {
            if (!handedOff)
            {
                try
                {
                    if (stream is not null)
                    {
                        await stream.DisposeAsync();
                    }
                    else
                    {
                        await muxed.DisposeAsync();
                    }
                }
                finally
                {
                    reservation.Dispose();
                }
            }
        }
    }

    /// <summary>What <see cref="HandleAsync"/> did after its handler, for a handler that ended later: never throws.</summary>
    private async ValueTask FinishAsync(Connection connection, IMuxedStream muxed, ResourceManager.StreamReservation reservation, Libp2pStream stream,
        CancellationToken stopping, Task handling)
    {
        try
        {
            try
            {
                await handling; // completed: rethrows its failure
            }
            catch (Exception e)
            {
                await FailAsync(connection, muxed, stream.Protocol, Failures.Classify(e, stopping), e);
            }
            finally
            {
                await stream.DisposeAsync();
            }
        }
        finally
        {
            reservation.Dispose();
        }
    }

    /// <summary>
    /// A long-lived inbound handler's tail: one object and one continuation on the handler's task, registered as an
    /// <c>await</c> registers it (on the captured context, with the execution context flowed), and counted as background work (<see cref="BackgroundWork.Hold"/>)
    /// until what follows the handler has run, so stopping still waits for it.
    /// </summary>
    private sealed class InboundTail(StreamRouter router, Connection connection, IMuxedStream muxed, ResourceManager.StreamReservation reservation,
        Libp2pStream stream, CancellationToken stopping, Task handling)
    {
        public void Park()
        {
            router._work.Hold();
            // OnCompleted, not UnsafeOnCompleted: the tail runs in the execution context the await resumed in (the
            // connection's log scopes), on the captured context, as HandleAsync's own continuation did.
            handling.GetAwaiter().OnCompleted(Done);
        }

        private void Done()
        {
            ValueTask finishing;
            try
            {
                finishing = router.FinishAsync(connection, muxed, reservation, stream, stopping, handling);
            }
            catch (Exception e)
            {
                finishing = ValueTask.FromException(e); // a bug of ours: logged by the work's owner below
            }
            router._work.Track("inbound stream", finishing);
            router._work.Release();
        }
    }

    /// <summary>
    /// The one catch site: log at the level the (classified) failure deserves, tear down as far as it reaches.
    /// <paramref name="e"/> is the exception it came as, if it came as one.
    /// </summary>
    private async ValueTask FailAsync(Connection connection, IMuxedStream muxed, string protocol, Failure failure, Exception? e)
    {
        if (failure.Kind != FailureKind.Cancelled)
        {
            // Tagged with the agreed protocol only: before agreement the remote's proposal is not ours to count by.
            _instruments.StreamFailed(protocol, failure.Kind);
        }
        switch (failure.Kind)
        {
            case FailureKind.Cancelled:
                break;
            case FailureKind.Internal:
                _log.HandlerBug(protocol, e!);
                break;
            default:
                _log.StreamFailed(protocol, failure.Kind, failure.Reason);
                break;
        }
        muxed.Reset();
        if (failure.Kind == FailureKind.ProtocolViolation)
        {
            _budgets.Penalise(connection.RemotePeer, Misbehaviour.Malformed);
        }
        if (failure is { Kind: FailureKind.ProtocolViolation, Radius: BlastRadius.Connection })
        {
            var violation = e is null ? null : Unwrap(e) as ProtocolViolationException;
            _log.ClosingForViolation(violation?.Protocol ?? protocol, violation?.Code ?? ViolationCode.Other, failure.Reason);
            await connection.CloseAsync();
        }
    }

    private static Exception Unwrap(Exception e) => e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) : e;

    /// <summary>Pieces of work running now: one per connection, one per inbound stream being handled.</summary>
    internal int Running => _work.Running;

    /// <summary>The router's stop token (what inbound stream handlers get).</summary>
    internal CancellationToken Stopping => _work.Stopping;

    public ValueTask DisposeAsync() => _work.DisposeAsync();
}
