"""What the masked autoencoders share: the mask a user gives or the noise that draws one,
and the reconstruction of images from a prediction.

    mask (B, L) of 0/1, 1 = removed      given, or drawn from noise (keep the
                                          int(L (1 - mask_ratio)) patches of smallest noise)

A subclass (CRATEMAE, MAE) sets, besides the image geometry of
:class:`ImageModel`: ``mask_ratio``, ``norm_pix_loss`` and ``rng`` (the
generator of its masking noise).
"""
from ..backend import backend_name, to_device
from ..functional._checks import check_array, check_finite, check_positive_int
from ..functional.masking import mask_from_noise, num_kept
from ..functional.patches import patchify_forward, unpatchify
from ._image import ImageModel


class MaskedImageModel(ImageModel):
    """Base of CRATEMAE and MAE: mask checks, mask drawing and reconstruction."""

    # ------------------------------------------------------------ inputs
    def _check_per_patch(self, name, a, xp, B):
        """One value per patch of B images: shape (B, L), on the model's backend; returns xp."""
        L = self.num_patches
        if tuple(a.shape) != (B, L):
            raise ValueError(f"{name} must have shape (B, L) = ({B}, {L}) for {B} images of "
                             f"{L} patches, got {tuple(a.shape)}")
        if xp is not self.xp:
            raise TypeError(f"{name} is a {backend_name(a)} array but the model lives on "
                            f"{self.backend}: move it with whitebox.to_device")
        return xp

    def _check_mask(self, mask, B, for_loss=True):
        """A user's mask: (B, L) of 0/1 on the model's backend, at least one patch kept per
        image and (for the loss) at least one removed."""
        L = self.num_patches
        xp = self._check_per_patch("mask", mask, check_array("mask", mask, floating=False), B)
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"mask must be a boolean, integer or real array of 0 (kept) and 1 "
                            f"(removed), got dtype {mask.dtype}")
        m = mask.astype(self.dtype)
        if not bool(xp.all((m == 0) | (m == 1))):
            raise ValueError("mask must hold only 0 (kept) and 1 (removed)")
        full = xp.nonzero(m.sum(axis=1) == L)[0]
        if full.size:
            raise ValueError(f"mask removes every patch of image(s) {full[:10].tolist()}: the "
                             "encoder would see only mask tokens and positions, so their "
                             "reconstruction could not depend on the image; keep at least one "
                             "patch per image")
        if for_loss and not bool(m.sum() > 0):
            raise ValueError("mask removes no patch: the loss is the mean over removed patches, "
                             "0/0 (the official code returns NaN); remove at least one, or use "
                             "model.encode(images) for features of whole images")
        return m

    def _draw_mask(self, noise, B):
        """The official rule: keep the int(L (1 - mask_ratio)) patches of smallest noise."""
        L, r = self.num_patches, self.mask_ratio
        keep = num_kept(L, r)
        if keep == 0:
            raise ValueError(f"mask_ratio {r} keeps int({L} * (1 - {r})) = 0 of {L} patches: "
                             "the encoder would see no image; lower mask_ratio")
        if keep == L:
            raise ValueError(f"mask_ratio {r} keeps all {L} patches (int({L} * (1 - {r})) = "
                             f"{L}), so the loss over removed patches is 0/0; raise mask_ratio, "
                             "or use model.encode(images) for features of whole images")
        if noise is None:
            noise = self.draw_noise(B)
        else:
            self._check_per_patch("noise", noise, check_array("noise", noise), B)
            check_finite("noise", noise)
        return mask_from_noise(noise, r).astype(self.dtype, copy=False)

    def _draws(self):
        return True                    # the patch masks, unless forward is given noise

    def draw_noise(self, batch):
        """Noise for ``batch`` images from ``self.rng``: what forward draws when given none."""
        return to_device(self.rng.random((check_positive_int("batch", batch),
                                          self.num_patches)), self.backend)

    def reconstruct(self, pred, images, mask):
        """Images (B, C, H, W) with the removed patches taken from ``pred`` (pixel units;
        with norm_pix_loss each predicted patch is put back on its own mean and std).

        Inputs: pred (B, L, P) as forward returns it, images (B, C, H, W), mask (B, L).
        """
        images = self._images(images)
        target, _ = patchify_forward(images, self.patch_hw)
        check_array("pred", pred)
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred must have shape (B, L, P) = {tuple(target.shape)} for these "
                             f"images (as forward returns it), got {tuple(pred.shape)}")
        mask = self._check_mask(mask, images.shape[0], for_loss=False)
        if self.norm_pix_loss:
            P = target.shape[-1]
            mean = target.mean(axis=-1, keepdims=True)
            var = ((target - mean) ** 2).sum(axis=-1, keepdims=True) / (P - 1)
            pred = pred * (var + 1e-6) ** 0.5 + mean
        m = mask[:, :, None]
        return unpatchify(target * (1 - m) + pred * m, images.shape, self.patch_hw)
