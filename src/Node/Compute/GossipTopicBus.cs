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
    /// that budget for the peer it came from (over budget: ignored, neither delivered nor forwarded; an over-budget penalty only
    /// when that peer authored the message, never for relaying others'), and one the validator
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

    public async ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> data, string? audience, CancellationToken ct) =>
        await _gossip.PublishAsync(topic, data, audience, ct);

    /// <summary>
    /// The validator's object rides on gossipsub's own message object (<see cref="GossipMessage.Validated"/>), which the
    /// router validates and then delivers: nothing is cached beside it, so what a flood leaves behind is bounded by the
    /// subscription's buffer (<see cref="GossipsubOptions.SubscriptionBuffer"/>), and a message the validator did not accept
    /// is never delivered. A message delivered without having met this validator (a node's own, with
    /// <see cref="GossipsubOptions.DeliverOwnMessages"/>) is validated in the pump before it is handled.
    /// </summary>
    public IDisposable Subscribe<TValidated>(string topic, TopicValidator<TValidated> validator, Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
        where TValidated : class
    {
        var budget = _budgets is not null && _topicBudgets.TryGetValue(topic, out var b) ? b : null;
        _gossip.SetValidator(topic, m =>
        {
            var remote = budget is not null && m.ReceivedFrom != _self;
            // Over budget, a message is ignored; only a peer flooding what it authored itself loses score for it, never a
            // relay forwarding others' messages (an honest mesh peer of a busy network would be banned for the network's volume).
            if (remote && !_budgets!.TryTake(m.ReceivedFrom, budget!, penalise: m.Author == m.ReceivedFrom))
            {
                return ValidationResult.Ignore;
            }
            var verdict = validator(ToTopicMessage(m), out var validated);
            m.Validated = verdict == TopicVerdict.Accept ? validated : null;
            // Forwarded, advertised and served only to peers that speak what it needs (a message older nodes would refuse).
            m.Audience = verdict == TopicVerdict.Accept && validated is ITopicAudience restricted ? restricted.Audience : null;
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
        return new Pump<TValidated>(this, topic, subscription, validator, handler);
    }

    private static TopicMessage ToTopicMessage(GossipMessage m) => new(m.Topic, m.Data, m.Author, m.ReceivedFrom);

    private sealed class Pump<TValidated> : IDisposable
        where TValidated : class
    {
        private readonly GossipTopicBus _bus;
        private readonly string _topic;
        private readonly GossipSubscription _subscription;
        private readonly CancellationTokenSource _stop = new();

        public Pump(GossipTopicBus bus, string topic, GossipSubscription subscription, TopicValidator<TValidated> validator,
            Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
        {
            _bus = bus;
            _topic = topic;
            _subscription = subscription;
            // Started inline, on the caller's context, up to its first wait; it ends when the subscription is disposed.
            Running = RunAsync(validator, handler);
        }

        /// <summary>The pump (it never throws: a handler's failure is logged and the next message delivered).</summary>
        public Task Running { get; }

        private async Task RunAsync(TopicValidator<TValidated> validator, Func<TopicMessage, TValidated, CancellationToken, ValueTask> handler)
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
                    var message = ToTopicMessage(m);
                    if (m.Validated is not TValidated validated)
                    {
                        // Not validated on its way in (a node's own message delivered to it): validated here, before it is handled.
                        if (validator(message, out var late) != TopicVerdict.Accept || late is null)
                        {
                            continue;
                        }
                        validated = late;
                    }
                    try
                    {
                        await handler(message, validated, _stop.Token);
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
