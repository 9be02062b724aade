using Microsoft.Extensions.Logging;
using Potluck.Protocol.Gossipsub;
using Potluck.Protocol.Host;
using Potluck.Scheduler.Topics;

namespace Potluck.Node.Compute;

/// <summary>
/// <see cref="ITopicBus"/> over gossipsub: publishing is <see cref="GossipsubService.PublishAsync"/>, a subscription
/// sets the topic's validator and pumps its messages to the handler one at a time.
/// </summary>
public sealed partial class GossipTopicBus : ITopicBus
{
    private readonly GossipsubService _gossip;
    private readonly ILogger<GossipTopicBus> _log;
    private readonly PeerBudgets? _budgets;
    private readonly IReadOnlyDictionary<string, string> _topicBudgets;
    private readonly Protocol.Identity.PeerId _self;

    /// <param name="budgets">The host's per-peer budgets: a message on a topic in <paramref name="topicBudgets"/> spends a token of
    /// that budget for the peer it came from (over budget: ignored, neither delivered nor forwarded), and one the validator
    /// rejects costs that peer a refused-proof penalty.</param>
    public GossipTopicBus(GossipsubService gossip, ILogger<GossipTopicBus> log, PeerBudgets? budgets = null,
        IReadOnlyDictionary<string, string>? topicBudgets = null, Protocol.Identity.PeerId self = default)
    {
        _self = self;
        _gossip = gossip;
        _log = log;
        _budgets = budgets;
        _topicBudgets = topicBudgets ?? new Dictionary<string, string>();
    }

    public async ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, CancellationToken ct) =>
        await _gossip.PublishAsync(topic, data, ct);

    public IDisposable Subscribe(string topic, Func<TopicMessage, TopicVerdict> validator, Func<TopicMessage, CancellationToken, ValueTask> handler)
    {
        var budget = _budgets is not null && _topicBudgets.TryGetValue(topic, out var b) ? b : null;
        _gossip.SetValidator(topic, m =>
        {
            var remote = budget is not null && m.ReceivedFrom != _self;
            if (remote && !_budgets!.TryTake(m.ReceivedFrom, budget!))
            {
                return ValidationResult.Ignore;
            }
            var verdict = validator(ToTopicMessage(m));
            if (remote && verdict == TopicVerdict.Reject)
            {
                _budgets!.Penalise(m.ReceivedFrom, Misbehaviour.RefusedProof);
            }
            return verdict switch
            {
                TopicVerdict.Accept => ValidationResult.Accept,
                TopicVerdict.Reject => ValidationResult.Reject,
                _ => ValidationResult.Ignore,
            };
        });
        var subscription = _gossip.Subscribe(topic);
        return new Pump(this, topic, subscription, handler);
    }

    private static TopicMessage ToTopicMessage(GossipMessage m) => new(m.Topic, m.Data, m.Author, m.ReceivedFrom);

    private sealed class Pump : IDisposable
    {
        private readonly GossipTopicBus _bus;
        private readonly string _topic;
        private readonly GossipSubscription _subscription;
        private readonly CancellationTokenSource _stop = new();

        public Pump(GossipTopicBus bus, string topic, GossipSubscription subscription, Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            _bus = bus;
            _topic = topic;
            _subscription = subscription;
            // Started inline, on the caller's context, up to its first wait; it ends when the subscription is disposed.
            Running = RunAsync(handler);
        }

        /// <summary>The pump (it never throws: a handler's failure is logged and the next message delivered).</summary>
        public Task Running { get; }

        private async Task RunAsync(Func<TopicMessage, CancellationToken, ValueTask> handler)
        {
            try
            {
                var reader = _subscription.Messages;
                while (await reader.WaitToReadAsync(_stop.Token))
                {
                    if (!reader.TryRead(out var m))
                    {
                        continue;
                    }
                    try
                    {
                        await handler(ToTopicMessage(m), _stop.Token);
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception e) when (Potluck.Protocol.Runtime.Failures.Classify(e, _stop.Token).Kind != Potluck.Protocol.Runtime.FailureKind.Internal)
                    {
                        LogHandlerDropped(_bus._log, _topic, e.Message);
                    }
                    catch (Exception e)
                    {
                        LogHandlerFailed(_bus._log, _topic, e);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _subscription.Dispose();
            _bus._gossip.SetValidator(_topic, null);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Handler for topic {Topic} gave up on a message: {Reason}")]
    private static partial void LogHandlerDropped(ILogger logger, string topic, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Handler for topic {Topic} failed")]
    private static partial void LogHandlerFailed(ILogger logger, string topic, Exception error);
}
