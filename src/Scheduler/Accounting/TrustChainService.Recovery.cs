using Microsoft.Extensions.Logging;
using Potluck.Protocol;
using Potluck.Protocol.Framing;
using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Runtime;

namespace Potluck.Scheduler.Accounting;

/// <summary>
/// Chain recovery (<see cref="ChainQueryProtocol"/>). A node whose ledger was lost but whose identity was kept would sign
/// its next block at seq 1 again: to every counterparty holding its old blocks, a fork. So it first asks the peers it is
/// connected to for the blocks they hold that it signed, checks every signature and link (<see cref="ChainRecovery"/>), and
/// stores them as its chain; until then (or until <see cref="ChainRecoveryOptions.Timeout"/>, after which it starts from
/// what it found, logged) it signs no half-block: its proposals wait and proposals to it are refused, both retried later.
/// A counterparty that answers with anything that does not check loses its whole answer and peer score.
/// </summary>
public sealed partial class TrustChainService
{
    private readonly TaskCompletionSource _recovered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<PeerId, (long Window, int Count)> _queries = [];
    private volatile bool _recovering;
    private long _recoveredBlocks;
    private long _rejectedAnswers;
    private long _queriesServed;
    private long _queriesRefused;

    /// <summary>True while this node recovers its chain and signs no half-block.</summary>
    public bool Recovering => _recovering;

    /// <summary>Own blocks recovered from counterparties.</summary>
    public long RecoveredBlocks => Interlocked.Read(ref _recoveredBlocks);

    /// <summary>Recovery answers rejected (forged, out of order, another identity's blocks, bad links).</summary>
    public long RejectedAnswers => Interlocked.Read(ref _rejectedAnswers);

    /// <summary>Recovery queries this node answered for counterparties.</summary>
    public long QueriesServed => Interlocked.Read(ref _queriesServed);

    /// <summary>Recovery queries refused (over <see cref="ChainRecoveryOptions.MaxQueriesPerPeerPerMinute"/>).</summary>
    public long QueriesRefused => Interlocked.Read(ref _queriesRefused);

    /// <summary>Completes when no recovery is under way (at once when none was begun).</summary>
    public Task WhenRecoveredAsync(CancellationToken ct) => _recovering ? LoopSafeWait.WaitAsync(_recovered.Task, ct) : Task.CompletedTask;

    /// <summary>
    /// Begins recovering this node's chain (call after <see cref="Start"/>, on a ledger that is new or whose recovery did not
    /// end). Nothing happens when the chain holds blocks already.
    /// </summary>
    public void BeginRecovery()
    {
        if (!_ledger.BeginChainRecovery())
        {
            return;
        }
        _recovering = true;
        LogRecoveryBegun(_log, _options.Recovery.Timeout);
        _work.Run("recover the chain", RecoverAsync);
    }

    private async Task RecoverAsync(CancellationToken ct)
    {
        var deadline = _time.GetUtcNow() + _options.Recovery.Timeout;
        var asked = new HashSet<PeerId>();
        var found = new List<RecoveredBlock>();
        var answered = 0;
        while (true)
        {
            foreach (var peer in _host.Connections.Select(c => c.RemotePeer).Distinct().ToList())
            {
                if (peer == _key.PeerId || IsForker(peer) || !asked.Add(peer))
                {
                    continue;
                }
                if (await QueryAsync(peer, ct) is { } blocks)
                {
                    answered++;
                    found.AddRange(blocks);
                }
            }
            var left = deadline - _time.GetUtcNow();
            if (left <= TimeSpan.Zero)
            {
                break;
            }
            await Task.Delay(left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1), _time, ct);
        }
        var (chain, problems) = ChainRecovery.Assemble(found);
        var stored = _ledger.EndChainRecovery(chain);
        Interlocked.Add(ref _recoveredBlocks, stored);
        _instruments.ChainRecovery("block_recovered", stored);
        _recovering = false;
        if (chain.Count == 0)
        {
            LogRecoveredNothing(_log, _options.Recovery.Timeout, answered, asked.Count);
        }
        else
        {
            LogRecovered(_log, stored, answered, asked.Count, chain[^1].Block.Seq, problems.Count);
        }
        _recovered.TrySetResult();
        await RetryAsync(ct);
    }

    /// <summary>Pages through the blocks <paramref name="peer"/> holds that this node signed; null when it failed or lied.</summary>
    private async Task<List<RecoveredBlock>?> QueryAsync(PeerId peer, CancellationToken ct)
    {
        var result = new List<RecoveredBlock>();
        ulong after = 0;
        var max = _options.Recovery.MaxBlocksPerAnswer;
        try
        {
            for (var page = 0; page < _options.Recovery.MaxPagesPerPeer; page++)
            {
                using var timeout = new CancellationTokenSource(_options.ExchangeTimeout, _time);
                using var linked = _work.Link(timeout.Token, ct);
                using var dialReason = DialReason.Use(DialReason.Payment);
                await using var stream = await _host.NewStreamAsync(peer, [ChainQueryProtocol.Id], linked.Token);
                await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(new ChainQuery { AfterSeq = after, Max = max }), linked.Token);
                await stream.Output.CompleteAsync();
                var reply = await LengthPrefixed.ReadAsync(stream.Input, ChainRecovery.MaxAnswerBytes(_options.Chain, max), ChainQueryProtocol.Id, linked.Token)
                    ?? throw new ProtocolViolationException(ChainQueryProtocol.Id, "stream ended without an answer");
                var status = ChainRecovery.CheckAnswer(_key.PeerId, peer, after, max, reply, _options.Chain, out var blocks, out var more);
                if (status != RecoveryStatus.Valid)
                {
                    Interlocked.Increment(ref _rejectedAnswers);
                    _instruments.ChainRecovery("answer_rejected");
                    _host.Budgets.Penalise(peer, Misbehaviour.RefusedProof);
                    LogAnswerRejected(_log, peer, status);
                    return null;
                }
                result.AddRange(blocks);
                if (!more)
                {
                    break;
                }
                after = blocks[^1].Block.Seq;
            }
            return result;
        }
        catch (Exception e) when (Failures.IsExpected(e, _work.Stopping))
        {
            LogQueryFailed(_log, peer, e.Message);
            return null;
        }
    }

    /// <summary>Serves a counterparty's recovery: the blocks it signed with this node, with this node's linked halves.</summary>
    private async Task HandleQueryAsync(IStream stream, CancellationToken ct)
    {
        try
        {
            if (!AllowQuery(stream.RemotePeer))
            {
                Interlocked.Increment(ref _queriesRefused);
                _instruments.ChainRecovery("query_refused");
                stream.Reset();
                return;
            }
            var body = await LengthPrefixed.ReadAsync(stream.Input, ChainQueryProtocol.MaxQueryBytes, ChainQueryProtocol.Id, ct);
            if (body is null)
            {
                return;
            }
            if (!ChainCodec.TryDecode(body, ChainQueryProtocol.MaxQueryBytes, out ChainQuery? query))
            {
                throw new ProtocolViolationException(ChainQueryProtocol.Id, "malformed query");
            }
            var max = Math.Min(query.Max, _options.Recovery.MaxBlocksPerAnswer);
            var rows = query.AfterSeq >= long.MaxValue ? [] : _ledger.BlocksSignedWith(stream.RemotePeer, query.AfterSeq, max + 1);
            var page = rows.Take(max).ToList();
            var answer = new ChainQueryAnswer { Blocks = [.. page.Select(r => r.Block)], Links = [.. page.Select(r => r.Link)], More = rows.Count > max };
            Interlocked.Increment(ref _queriesServed);
            _instruments.ChainRecovery("query_served");
            await LengthPrefixed.WriteAsync(stream.Output, ChainCodec.Encode(answer), ct);
            await stream.Output.CompleteAsync();
        }
        catch (ProtocolViolationException e)
        {
            LogViolation(_log, stream.RemotePeer, e.Message);
            _host.Budgets.Penalise(stream.RemotePeer, Misbehaviour.Malformed);
            stream.Reset();
        }
    }

    /// <summary>At most <see cref="ChainRecoveryOptions.MaxQueriesPerPeerPerMinute"/> per peer in each minute; the table stays bounded.</summary>
    private bool AllowQuery(PeerId peer)
    {
        var window = _time.GetUtcNow().ToUnixTimeMilliseconds() / 60_000;
        lock (_gate)
        {
            if (_queries.Count >= 4096)
            {
                foreach (var stale in _queries.Where(q => q.Value.Window != window).Select(q => q.Key).ToList())
                {
                    _queries.Remove(stale);
                }
                if (_queries.Count >= 4096 && !_queries.ContainsKey(peer))
                {
                    return false;
                }
            }
            var (w, count) = _queries.TryGetValue(peer, out var q) && q.Window == window ? q : (window, 0);
            if (count >= _options.Recovery.MaxQueriesPerPeerPerMinute)
            {
                return false;
            }
            _queries[peer] = (w, count + 1);
            return true;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The ledger is new but the identity is not: recovering this node's chain from its counterparties (at most {Timeout}) before signing any payment")]
    private static partial void LogRecoveryBegun(ILogger logger, TimeSpan timeout);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Chain recovery found no block of this node in {Timeout} ({Answered} of {Asked} peers answered): starting a fresh chain at seq 1")]
    private static partial void LogRecoveredNothing(ILogger logger, TimeSpan timeout, int answered, int asked);

    [LoggerMessage(Level = LogLevel.Information, Message = "Chain recovery restored {Stored} own blocks ({Answered} of {Asked} peers answered); the next block follows seq {Head}; {Problems} inconsistencies")]
    private static partial void LogRecovered(ILogger logger, int stored, int answered, int asked, ulong head, int problems);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Chain recovery: rejected the answer of {Peer}: {Status}")]
    private static partial void LogAnswerRejected(ILogger logger, PeerId peer, RecoveryStatus status);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Chain recovery query to {Peer} failed: {Reason}")]
    private static partial void LogQueryFailed(ILogger logger, PeerId peer, string reason);
}
