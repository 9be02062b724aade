using Microsoft.Extensions.DependencyInjection;

namespace Potluck.Node.Hosting;

/// <summary>
/// What a node's service provider made, kept by the node itself so the provider can go once the node has started
/// (<see cref="PotluckNodeBuilder.ReleaseServicesAfterStart"/>; issue 11: a provider's descriptors, call-site caches
/// and compiled resolvers are ~40 KiB a node, and nothing resolves anything new after start). When tracking,
/// <see cref="Track"/> wraps every singleton registration so that each instance the provider creates is recorded as it
/// is created: by its service type (what <see cref="PotluckNode.Services"/> answers after start) and, when disposable,
/// in an ordered list that <see cref="DisposeAsync"/> disposes in reverse, as the provider does (the same list: the
/// provider disposes what its factories return, duplicates included, last created first, stopping at the first failure).
/// </summary>
internal sealed class NodeParts
{
    private readonly Lock _gate = new();
    private readonly Dictionary<Type, object> _byType = [];
    private readonly List<object> _disposables = [];
    private bool _disposing;

    /// <summary>Whether the registrations were wrapped (<see cref="Track"/>): only then does this hold what the provider made.</summary>
    public bool Tracking { get; private set; }

    /// <summary>Disposables in the order they were created (for tests: the provider's own list, the generic host less).</summary>
    public IReadOnlyList<object> Disposables
    {
        get
        {
            lock (_gate)
            {
                return [.. _disposables];
            }
        }
    }

    /// <summary>
    /// Wraps <paramref name="services"/>' singletons so that what the provider creates is recorded here: factories as
    /// they are; types that are disposable built with <see cref="ActivatorUtilities"/> (the others are the generic
    /// host's own, which nothing asks for after start); instances recorded as they are (the provider never disposes
    /// them). Left alone: the generic host (<see cref="Microsoft.Extensions.Hosting.IHost"/>, whose disposal is the
    /// provider's), open generics and keyed services (a node registers none that it uses after start; a test pins that
    /// the provider holds nothing disposable that this list lacks).
    /// </summary>
    public void Track(IServiceCollection services)
    {
        Tracking = true;
        for (var i = 0; i < services.Count; i++)
        {
            var d = services[i];
            if (d.Lifetime != ServiceLifetime.Singleton || d.IsKeyedService || d.ServiceType.IsGenericTypeDefinition
                || d.ServiceType == typeof(Microsoft.Extensions.Hosting.IHost))
            {
                continue;
            }
            var type = d.ServiceType;
            if (d.ImplementationInstance is { } instance)
            {
                Record(type, instance, disposable: false);
            }
            else if (d.ImplementationFactory is { } factory)
            {
                services[i] = ServiceDescriptor.Singleton(type, sp => Record(type, factory(sp), disposable: true));
            }
            else if (d.ImplementationType is { } implementation
                && (typeof(IDisposable).IsAssignableFrom(implementation) || typeof(IAsyncDisposable).IsAssignableFrom(implementation)))
            {
                services[i] = ServiceDescriptor.Singleton(type, sp => Record(type, ActivatorUtilities.CreateInstance(sp, implementation), disposable: true));
            }
        }
    }

    /// <summary>
    /// The generic host's plumbing, which nothing asks a started node for: not kept by type (an options action there
    /// holds the host builder and so the whole provider). Still disposed when it is disposable (its configuration).
    /// </summary>
    private static bool IsPlumbing(Type type) => type.Namespace is "Microsoft.Extensions.Hosting" or "Microsoft.Extensions.Options"
        or "Microsoft.Extensions.Configuration" or "Microsoft.Extensions.DependencyInjection";

    private object Record(Type type, object instance, bool disposable)
    {
        lock (_gate)
        {
            if (!IsPlumbing(type))
            {
                _byType[type] = instance;
            }
            if (disposable && instance is IDisposable or IAsyncDisposable)
            {
                _disposables.Add(instance);
            }
        }
        return instance;
    }

    /// <summary>The instance made for <typeparamref name="T"/>; null when none was made or the node is being disposed.</summary>
    public T? Get<T>() where T : class
    {
        lock (_gate)
        {
            return !_disposing && _byType.TryGetValue(typeof(T), out var o) ? (T)o : null;
        }
    }

    /// <summary>A provider over what was made (no new instances: what was not made is not there).</summary>
    public IServiceProvider AsProvider() => new Made(this);

    /// <summary>Disposes what was made, last created first, as the provider would have.</summary>
    public async ValueTask DisposeAsync()
    {
        object[] toDispose;
        lock (_gate)
        {
            if (_disposing)
            {
                return;
            }
            _disposing = true;
            toDispose = [.. _disposables];
            _disposables.Clear();
        }
        for (var i = toDispose.Length - 1; i >= 0; i--)
        {
            if (toDispose[i] is IAsyncDisposable asyncDisposable)
            {
                await asyncDisposable.DisposeAsync();
            }
            else
            {
                ((IDisposable)toDispose[i]).Dispose();
            }
        }
    }

    /// <summary>Answers from what was made; once the node is disposed, throws as a disposed provider does.</summary>
    private sealed class Made(NodeParts parts) : IServiceProvider
    {
        public object? GetService(Type serviceType)
        {
            lock (parts._gate)
            {
                ObjectDisposedException.ThrowIf(parts._disposing, this);
                return serviceType == typeof(IServiceProvider) ? this : parts._byType.GetValueOrDefault(serviceType);
            }
        }
    }
}
